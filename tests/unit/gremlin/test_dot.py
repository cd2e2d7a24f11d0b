"""--format dot rendering."""

from __future__ import annotations

import pytest

from skygraph.gremlin.dot import NotRenderable, render


def n(ident: str, name: str = "", typ: str = "") -> dict[str, object]:
    meta = {k: v for k, v in (("Name", name), ("Type", typ)) if v}
    return {"ID": ident, "Metadata": meta, "Host": "", "Origin": "", "CreatedAt": None,
            "UpdatedAt": None, "Revision": 0}


def test_nodes_and_edges() -> None:
    edge = {"ID": "e", "Parent": "a", "Child": "b", "Metadata": {"RelationType": "layer2"}}
    assert render([n("a", "eth0", "veth"), edge]) == (
        'digraph skygraph {\n'
        '  "a" [label="eth0\\nveth"];\n'
        '  "b" [label="b"];\n'
        '  "a" -> "b" [label="layer2"];\n'
        '}\n')


def test_paths_and_subgraphs() -> None:
    out = render([[n("a"), n("b"), n("c")]])
    assert '"a" -> "b" [style=bold, dir=none];' in out and '"b" -> "c"' in out
    sub = render({"Nodes": [n("x", 'we"ird')], "Edges": []})
    assert '"x" [label="we\\"ird"];' in sub


@pytest.mark.parametrize("result", [3, ["a", "b"], [{"Value": 1}], {"a": 1}])
def test_not_renderable(result: object) -> None:
    with pytest.raises(NotRenderable):
        render(result)
