"""`netdsl draw`: the DOT it builds from the checked graph (folding, clusters, shapes on edges, joins)
and the command (formats, errors, a missing `dot`)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

import netdsl
from netdsl import cli, draw
from netdsl.text import human as _human
from netdsl.graph import Layer, Module
from netdsl.errors import Span

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
HAS_DOT = shutil.which("dot") is not None
SKIP_RED, IDENTITY_BLUE = draw._SKIP["color"], draw._IDENTITY["color"]


# ---- reading the DOT text back ------------------------------------------------------------------

_STATEMENT = re.compile(r"^\s*(\w+)(?: -> (\w+))? \[label=(<.*>|\"[^\"]*\"|[^\s\]]+)(.*)\]$")  # no ">" after a label


def _text(label: str) -> str:
    """A label's words: quotes, HTML tags and entities removed."""
    label = label[1:-1] if label[:1] in "<\"" else label
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", label))).strip()


@dataclass
class Dot:
    """The nodes, edges and clusters of a DOT text as graphviz writes it (one statement a line)."""

    source: str
    labels: dict[str, str] = field(default_factory=dict)  # node → label text, tags stripped
    attrs: dict[str, str] = field(default_factory=dict)  # node → the rest of its attributes
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)  # tail, head, label, attributes
    clusters: dict[str, str] = field(default_factory=dict)  # cluster → label text
    parent: dict[str, str] = field(default_factory=dict)  # node → its innermost cluster

    @classmethod
    def of(cls, source: str) -> "Dot":
        dot, open_clusters = cls(source), []
        for line in source.splitlines():
            if opening := re.match(r"\s*subgraph (cluster_\d+) \{", line):
                open_clusters.append(opening[1])
            elif line.strip() == "}" and open_clusters:
                open_clusters.pop()
            elif (cluster := re.match(r"\s*graph \[.*label=(<.*>) labeljust", line)) and open_clusters:
                dot.clusters[open_clusters[-1]] = _text(cluster[1])
            elif match := _STATEMENT.match(line):
                tail, head, label, rest = match.groups()
                if head:
                    dot.edges.append((tail, head, _text(label), rest))
                else:
                    dot.labels[tail], dot.attrs[tail] = _text(label), rest
                    if open_clusters:
                        dot.parent[tail] = open_clusters[-1]
        return dot

    def boxes(self) -> list[str]:
        """Nodes a reader sees: all but the points where edges enter clusters."""
        return [node for node, rest in self.attrs.items() if "shape=point" not in rest]

    def find(self, pattern: str) -> list[str]:
        return [node for node, text in self.labels.items() if re.search(pattern, text)]

    def find_clusters(self, pattern: str) -> list[str]:
        return [cluster for cluster, text in self.clusters.items() if re.search(pattern, text)]

    def into(self, node: str) -> list[tuple[str, str, str, str]]:
        return [edge for edge in self.edges if edge[1] == node]

    def out_of(self, node: str) -> list[tuple[str, str, str, str]]:
        return [edge for edge in self.edges if edge[0] == node]


@lru_cache(maxsize=None)
def graph(name: str):
    return netdsl.check(NETWORKS / f"{name}.net")


def dot_of(name: str, depth: int | None = None, rankdir: str = "TB") -> Dot:
    return Dot.of(draw.to_dot(graph(name), depth, rankdir).source)


def fmt(shape) -> str:
    return "×".join(map(str, shape))


# ---- folding and depth -----------------------------------------------------------------------------

def test_resnet152_default_depth_fits_a_screen_and_depth_expands():
    assert draw.default_depth(graph("resnet152")) == 2
    default, deeper = dot_of("resnet152"), dot_of("resnet152", depth=3)
    assert len(default.boxes()) <= 40
    assert len(deeper.boxes()) > len(default.boxes())
    assert len(dot_of("resnet152", depth=1).boxes()) < len(default.boxes())
    assert "subgraph cluster_" in default.source  # the stages are clusters at depth 2


def test_resnet152_layer3_folds_its_35_identical_bottlenecks():
    layer3 = next(child for child in graph("resnet152").root.children() if child.name == "layer3")
    blocks = list(layer3.children())
    assert len(blocks) == 36
    dot = dot_of("resnet152")
    [folded] = dot.find(r"^1–35 bottleneck ×35")
    # the fold's numbers are the 35 blocks' totals, the first block (stride 2, projection) stays apart
    assert f"{_human(sum(block.params for block in blocks[1:]))} params" in dot.labels[folded]
    assert f"{_human(sum(block.macs for block in blocks[1:]))} MACs" in dot.labels[folded]
    assert "shape=box3d" in dot.attrs[folded]
    assert len(dot.find(r"^0 bottleneck")) == 4  # one first block per stage
    # folded one level up, layer3 is one node that says what it stacks
    [stage] = dot_of("resnet152", depth=1).find(r"^layer3 stage")
    assert "36 × bottleneck" in dot_of("resnet152", depth=1).labels[stage]


def test_fold_needs_the_same_structure():
    # Inception-v3's Mixed_5c and Mixed_5d are both inception_a(64); Mixed_5b (32 pool features) is not
    dot = dot_of("inception_v3", depth=1)
    assert dot.find(r"^Mixed_5c–Mixed_5d inception_a ×2")
    assert dot.find(r"^Mixed_5b inception_a")
    assert dot.find(r"^Mixed_6c–Mixed_6d inception_c ×2") and dot.find(r"^Mixed_6b ") and dot.find(r"^Mixed_6e ")


def test_default_depths_of_the_documented_networks():
    depths = {name: draw.default_depth(graph(name))
              for name in ("resnet152", "googlenet", "densenet121", "inception_v3", "efficientnet_b0")}
    assert depths == {"resnet152": 2, "googlenet": 2, "densenet121": 4, "inception_v3": 1, "efficientnet_b0": 3}


def test_folded_blocks_say_what_they_are_made_of():
    """Issue 16: GoogLeNet's branches read "2 × conv_bn_relu"; now kernel sizes and pools, branches
    side by side with |, norms and activations implied, repeats counted."""
    googlenet = graph("googlenet")
    inception = next(node for node in googlenet.root.children() if node.name == "inception4a")
    # torchvision's GoogLeNet has a 3×3 where the paper has a 5×5 (its branch3)
    assert draw.made_of(inception) == "1×1 conv | 1×1 conv → 3×3 conv | 1×1 conv → 3×3 conv | 3×3 maxpool → 1×1 conv"
    dot = dot_of("googlenet", depth=1)
    [node] = dot.find(r"^inception4a inception_module")
    assert "1×1 conv | 1×1 conv → 3×3 conv | 1×1 conv → 3×3 conv | 3×3 maxpool → 1×1 conv" in dot.labels[node]
    at_two = dot_of("googlenet")  # depth 2: each branch folded, saying what it is
    assert [at_two.labels[branch][:30] for branch in at_two.find(r"^branch4 ")] == ["branch4 3×3 maxpool → 1×1 conv"] * 9
    branch2 = [at_two.labels[branch] for branch in at_two.find(r"^branch2 ")]  # was "2 × conv_bn_relu"
    assert len(branch2) == 9 and all(label.startswith("branch2 1×1 conv → 3×3 conv ") for label in branch2)
    resnet = graph("resnet50")
    stage = next(node for node in resnet.root.children() if node.name == "layer2")
    assert draw.made_of(stage) == "(1×1 conv → 3×3 conv /2 → 1×1 conv) → (1×1 conv → 3×3 conv → 1×1 conv) ×3"
    mbconv = graph("efficientnet_b0").root.body[0].body[2].body[1]
    assert draw.made_of(mbconv) == "1×1 conv → 3×3 conv dw → gate → 1×1 conv"
    dense = graph("densenet121").root.body[0].body[4]
    assert draw.made_of(dense) == "dense(1×1 conv → 3×3 conv) ×6"
    assert draw._wrapped("1×1 conv | 1×1 conv → 5×5 conv | 3×3 maxpool → 1×1 conv | 1×1 conv → 3×3 conv ×2") == [
        "1×1 conv | 1×1 conv → 5×5 conv |", "3×3 maxpool → 1×1 conv |", "1×1 conv → 3×3 conv ×2"]


# ---- shapes, costs and joins ---------------------------------------------------------------------------

def test_edge_labels_are_the_checkers_shapes():
    network = graph("resnet152")
    dot = dot_of("resnet152", depth=1)
    expected = [network.input_shape, *(child.out_shape for child in network.root.children())]
    assert [label for _, _, label, _ in dot.edges] == [fmt(shape) for shape in expected]
    assert dot.edges[-1][1] == "output" and dot.edges[-1][2] == "1000"


def test_layer_nodes_carry_params_and_macs_in_human_units():
    network = graph("resnet152")
    conv1 = next(layer for path, layer in network.layers() if path == "conv1")
    [node] = dot_of("resnet152").find(r"^conv1 conv 7×7 /2")
    assert dot_of("resnet152").labels[node].endswith(f"{_human(conv1.params)} params · {_human(conv1.macs)} MACs")
    assert "9.41 K params · 118.01 M MACs" in dot_of("resnet152").labels[node]


def test_residual_skip_edges_and_the_projection_on_them():
    dot = dot_of("resnet50", depth=3)
    adds = dot.find(r"^\+$")
    assert len(adds) == 8  # per stage: the first block and the folded rest
    for add in adds:
        incoming = dot.into(add)
        assert len(incoming) == 2
        assert sum(SKIP_RED in rest for *_, rest in incoming) == 1
    projections = dot.find(r"^downsample")
    assert len(projections) == 4
    for projection in projections:  # the shortcut projection sits on the skip path, red both ways
        assert all(SKIP_RED in rest for *_, rest in dot.into(projection) + dot.out_of(projection))
        assert [head for _, head, _, _ in dot.out_of(projection)][0] in adds


def test_inception_branches_meet_in_a_concat_with_their_shapes():
    network = graph("googlenet")
    dot = dot_of("googlenet", depth=2)
    concats = dot.find(r"^‖$")
    assert len(concats) == 9
    assert all(len(dot.into(concat)) == 4 for concat in concats)
    inception3a = next(child for child in network.root.children() if child.name == "inception3a")
    branches = [child.out_shape for child in inception3a.children()]
    first = concats[0]
    assert sorted(label for _, _, label, _ in dot.into(first)) == sorted(fmt(shape) for shape in branches)
    assert [label for _, _, label, _ in dot.out_of(first)] == [fmt(inception3a.out_shape)]


def test_aux_heads_are_side_branches():
    dot = dot_of("googlenet", depth=2)
    for head in ("aux1", "aux2"):
        [terminal] = dot.find(rf"^{head} output \(training\)$")
        [(_, _, label, rest)] = dot.into(terminal)
        assert label == "1000" and "dashed" in rest
    assert len(dot.find(r"^output$")) == 1


def test_densenet_dense_connections():
    network = graph("densenet121")
    dot = dot_of("densenet121")  # the default depth opens the dense layers
    folds = dot.find_clusters(r"^denseblock\d\.denselayer1–\d+ dense_layer ×\d+")
    assert [re.search(r"×(\d+)", dot.clusters[fold])[1] for fold in folds] == ["6", "12", "24", "16"]
    identity = [edge for edge in dot.edges if IDENTITY_BLUE in edge[3]]
    assert len(identity) == 4 and all(dot.labels[head] == "‖" for _, head, _, _ in identity)
    # each runs from the point where the block's input enters its cluster to that block's concat
    assert [dot.parent[tail] for tail, *_ in identity] == folds == [dot.parent[head] for _, head, *_ in identity]
    # block 1's identity edge carries what its 6 dense layers receive: 64, 96, ... 224 channels
    features = next(child for child in network.root.children() if child.name == "features")
    block1 = next(child for child in features.children() if child.name == "denseblock1")
    inputs = [layer.in_shape for layer in block1.children()]
    assert identity[0][2] == f"{inputs[0][0]}–{inputs[-1][0]}×56×56" == "64–224×56×56"


def test_squeeze_excitation_gate():
    dot = dot_of("se_resnet50", depth=4)
    gates = dot.find(r"^×$")
    assert len(gates) == 8
    for gate in gates:
        incoming = dot.into(gate)
        assert len(incoming) == 2 and sum("dashed" in rest for *_, rest in incoming) == 1


def test_rankdir_lr():
    assert "rankdir=LR" in dot_of("resnet18", rankdir="LR").source
    assert "rankdir=TB" in dot_of("resnet18").source


def test_labels_are_escaped():
    span = Span("x.net", 1, 1, 1, 2)
    shape = (3, 4, 4)
    layer = Layer(name='a<b>&"c', op="relu", args={}, in_shape=shape, out_shape=shape, params=0, macs=0, span=span)
    module = Module(name="m<1>", kind="block", type_name="t&u", body=[layer], in_shape=shape, out_shape=shape,
                    span=span)
    assert draw._layer_title(layer) == "<b>a&lt;b&gt;&amp;&quot;c</b> relu"
    assert draw._module_title(module.name, module) == "<b>m&lt;1&gt;</b> t&amp;u"


def test_every_network_draws_at_its_default_depth():
    for path in sorted(NETWORKS.glob("*.net")):
        network = graph(path.stem)
        dot = Dot.of(draw.to_dot(network).source)
        assert dot.edges and dot.edges[-1][1] == "output", path.name
        assert dot.into("output")[0][2] == fmt(network.output_shape), path.name


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_dot_accepts_the_source_without_warnings():
    for name, depth in (("googlenet", None), ("densenet121", None), ("nasnet_a_large", 2), ("se_resnet50", 4)):
        result = subprocess.run(["dot", "-Tplain"], input=draw.to_dot(graph(name), depth).source,
                                capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, (name, result.stderr)


# ---- the command -----------------------------------------------------------------------------------

RESNET18 = str(NETWORKS / "resnet18.net")
MAGIC = {".svg": b"<svg", ".png": b"\x89PNG", ".pdf": b"%PDF", ".dot": b"digraph resnet18"}


@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf", ".dot"])
def test_draw_writes_each_format(tmp_path, capsys, suffix):
    if suffix != ".dot" and not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    out = tmp_path / f"r18{suffix}"
    assert cli.main(["draw", RESNET18, "-o", str(out), "--depth", "3"]) == 0
    data = out.read_bytes()
    assert MAGIC[suffix] in data[:400]
    assert f"wrote {out}" in capsys.readouterr().out
    assert os.listdir(tmp_path) == [out.name]  # written atomically: no temporary left behind


def test_draw_default_output_is_the_network_name(tmp_path, monkeypatch):
    if not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["draw", RESNET18, "-D", "classes=10"]) == 0
    assert (tmp_path / "resnet18.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_bad_extension_and_depth_are_usage_errors(tmp_path, capsys):
    assert cli.main(["draw", RESNET18, "-o", str(tmp_path / "r18.jpg")]) == 2
    assert "cannot draw to '.jpg'; use .svg, .png, .pdf, .dot" in capsys.readouterr().err
    assert cli.main(["draw", RESNET18, "-o", str(tmp_path / "r18.dot"), "--depth", "0"]) == 2
    assert "--depth must be at least 1" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_rankdir_choices_are_checked():
    result = subprocess.run([sys.executable, "-m", "netdsl", "draw", RESNET18, "--rankdir", "BT"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'BT'" in result.stderr


def test_bad_network_is_a_located_error_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network bad {\n  input [3, 32, 32]\n  conv(8, 3)\n  fc: linear(10)\n}\n")
    out = tmp_path / "bad.png"
    assert cli.main(["draw", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "error:" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["bad.net"]


def test_missing_dot_writes_the_source_and_says_how_to_install(tmp_path):
    # no `dot` on PATH: the interpreter is named by its full path, so nothing else is needed
    out = tmp_path / "r18.png"
    result = subprocess.run([sys.executable, "-m", "netdsl", "draw", RESNET18, "-o", str(out)],
                            capture_output=True, text=True, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "'dot' is not installed" in result.stderr
    assert "apt-get install graphviz" in result.stderr and "brew install graphviz" in result.stderr
    assert f"dot -Tpng {tmp_path / 'r18.dot'} -o {out}" in result.stderr
    assert not out.exists()
    assert (tmp_path / "r18.dot").read_text(encoding="utf-8").startswith("digraph resnet18")


def test_dot_vanishing_while_rendering_is_handled_the_same(tmp_path, monkeypatch, capsys):
    import graphviz

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    assert cli.main(["draw", RESNET18, "-o", str(tmp_path / "r18.svg")]) == 2
    assert "install Graphviz" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["r18.dot"]


def test_readme_diagrams_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"\((docs/images/[\w.]+\.png)\)", readme)
    assert {Path(image).stem for image in images} >= {"resnet152", "googlenet", "densenet121", "inception_v3",
                                                      "efficientnet_b0"}
    for image in images:
        assert (ROOT / image).read_bytes()[:4] == b"\x89PNG", image
    assert "ResNet-152 2 (17 boxes)" in readme.replace("\n", " ")
    assert len(dot_of("resnet152").boxes()) == 17


# ---- figures for a paper (issue 16 item 2) ---------------------------------------------------------

def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _svg_size(path: Path) -> tuple[float, float]:
    width, height = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', path.read_text()).groups()
    return float(width), float(height)


_COLOURS = re.compile(r'(?:fillcolor|bgcolor)="?(#[0-9a-f]{6})')


def test_paper_style_is_greyscale_and_its_legend_names_every_fill_and_line():
    dot = draw.to_dot(graph("resnet50"), 3, layout=draw.Layout(style="paper", legend=True)).source
    legend = next(line for line in dot.splitlines() if line.strip().startswith("legend "))
    drawing = dot.replace(legend, "")
    fills = set(_COLOURS.findall(drawing)) - {"#f3f3f3"}  # the input and output ellipses
    assert fills and all(colour[1:3] == colour[3:5] == colour[5:7] for colour in fills)  # greys only
    assert fills - {"#ffffff"} <= set(_COLOURS.findall(legend))  # every fill is in the legend
    for words in ("<b>conv</b> conv", "<b>norm</b> bn", "<b>pool</b> adaptive_avgpool, maxpool", "residual add",
                  "residual shortcut", "consecutive copies of a block, one drawn inside"):
        assert words in legend, words
    assert "color=\"#c0392b\"" not in dot and "#2e6fb7" not in dot  # no hue tells anything apart
    densenet = draw.to_dot(graph("densenet121"), layout=draw.Layout(style="paper")).source
    assert "the input itself (dense)" in densenet and 'style=dotted' in densenet
    nasnet = draw.to_dot(graph("nasnet_a_large"), 1, layout=draw.Layout(legend=True)).source
    assert "an extra input of a block (an earlier tensor)" in nasnet  # NASNet's dashed edges, explained


def test_no_legend_unless_asked():
    assert "legend" not in draw.to_dot(graph("resnet50")).source


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_columns_size_and_dpi(tmp_path, capsys):
    efficientnet = str(NETWORKS / "efficientnet_b0.net")
    one, three = tmp_path / "one.svg", tmp_path / "three.svg"
    assert cli.main(["draw", efficientnet, "-o", str(one)]) == 0
    assert cli.main(["draw", efficientnet, "-o", str(three), "--columns", "3"]) == 0
    (width1, height1), (width3, height3) = _svg_size(one), _svg_size(three)
    assert height3 < 0.65 * height1 and width3 > 2 * width1  # wrapped into columns: wider, not as tall
    column = tmp_path / "column.svg"
    assert cli.main(["draw", efficientnet, "-o", str(column), "--size", "column"]) == 0
    width, height = _svg_size(column)
    assert width <= 3.5 * 72 + 1 and height <= 9 * 72 + 1 and abs(width / height - width1 / height1) < 0.02
    assert cli.main(["draw", RESNET18, "-o", str(tmp_path / "a.png")]) == 0
    assert cli.main(["draw", RESNET18, "-o", str(tmp_path / "b.png"), "--dpi", "300"]) == 0
    (w96, h96), (w300, h300) = (_png_size((tmp_path / name).read_bytes()) for name in ("a.png", "b.png"))
    assert abs(w300 / w96 - 300 / 96) < 0.05 and abs(h300 / h96 - 300 / 96) < 0.05
    capsys.readouterr()


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_paper_pdf_embeds_its_fonts(tmp_path):
    out = tmp_path / "r18.pdf"
    assert cli.main(["draw", RESNET18, "-o", str(out), "--style", "paper"]) == 0
    data = out.read_bytes()
    assert b"/FontFile" in data  # FontFile, FontFile2 or FontFile3: the glyphs are in the file


@pytest.mark.parametrize("args, message", [
    (["--dpi", "300", "-o", "x.svg"], "--dpi 300: a PNG's resolution; SVG and PDF are vector drawings (use --size)"),
    (["--dpi", "5", "-o", "x.png"], "--dpi 5: between 10 and 2400"),
    (["--columns", "0", "-o", "x.dot"], "--columns must be between 1 and 20, got 0"),
    (["--size", "wide", "-o", "x.dot"], "--size: size 'wide' is not column, page, slide or WIDTHxHEIGHT in inches"),
    (["--style", "print", "-o", "x.dot"], "invalid choice: 'print'"),
])
def test_figure_options_are_checked(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "netdsl", "draw", RESNET18, *args], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []
