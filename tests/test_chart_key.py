"""The chart key drawn under Explore's trade-off chart (core.app.narrow): what it lists, how each trace
looks in it, and that names stay plain text."""
import plotly.graph_objects as go

from core.app.narrow import fixed_frame, legend_html, legend_items


def _figure():
    return go.Figure([
        go.Scatter(x=[1, 2], y=[1, 2], mode="lines", name="Frontier", line=dict(color="#facc15")),
        go.Scatter(x=[1, 2], y=[1, 2], mode="lines+markers", name="Budget",
                   line=dict(color="#94a3b8", dash="dash"), marker=dict(symbol="square", color="#94a3b8")),
        go.Scatter(x=[1], y=[1], mode="markers", name="Best", marker=dict(symbol="diamond-open",
                                                                         line=dict(color="#0f172a"))),
        go.Scatter(x=[1, 2], y=[2, 3], mode="lines", name="Band", fill="tonexty",
                   fillcolor="rgba(37,99,235,0.15)"),
        go.Scatter(x=[1], y=[1], mode="markers", name="Entropy: current", showlegend=False),
        go.Scatter(x=[1, 2], y=[1, 2], mode="lines", line=dict(dash="dot", color="#111111"), name="<b>x</b> & y"),
    ])


def test_the_key_lists_what_plotly_would_with_each_traces_look():
    items = legend_items(_figure())
    assert [name for _, _, name in items] == ["Frontier", "Budget", "Best", "Band", "<b>x</b> & y"]
    glyphs = {name: (g, c) for g, c, name in items}
    assert glyphs["Frontier"] == ("━", "#facc15")
    assert glyphs["Budget"] == ("■", "#94a3b8")
    assert glyphs["Best"] == ("◇", "#0f172a")           # an open marker takes its outline colour
    assert glyphs["Band"] == ("▬", "rgba(37,99,235,0.45)")  # a faint band is darkened to be seen
    assert glyphs["<b>x</b> & y"] == ("┅", "#111111")


def test_names_are_plain_text_and_the_frame_is_fixed():
    fig = fixed_frame(_figure())
    page = legend_html(fig)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page
    assert fig.layout.showlegend is False
    assert fig.layout.xaxis.automargin is False and fig.layout.yaxis.automargin is False
    assert fig.layout.margin.l > 0 and fig.layout.margin.b > 0
