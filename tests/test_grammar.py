"""Stage 1 — parse: .net text → AST, and the syntax errors users see.

Parse only: nothing here evaluates an expression or checks a shape.
"""

from __future__ import annotations

import re

import pytest

from netdsl import ast
from netdsl.errors import NetDSLError, SyntaxError_
from netdsl.parse import parse

FILE = "grammar_test.net"


# ---- helpers ---------------------------------------------------------------------------------

def parse_one_expr(text: str) -> ast.Expr:
    """The AST of one expression, parsed as the value of a `let` inside a block."""
    tree = parse(f"block b {{\n  let v = {text}\n}}\n", FILE)
    (let,) = tree.decls[0].body
    assert isinstance(let, ast.Let)
    return let.value


def sexpr(node) -> str:
    """A compact, fully parenthesised rendering of an expression AST."""
    if isinstance(node, ast.Literal):
        value = node.value
        if value is True:
            return "true"
        if value is False:
            return "false"
        if value is None:
            return "none"
        if isinstance(value, str):
            return f'"{value}"'
        return repr(value)
    if isinstance(node, ast.Name):
        return node.name
    if isinstance(node, ast.InputRef):
        return "in"
    if isinstance(node, ast.Binary):
        return f"({node.op} {sexpr(node.left)} {sexpr(node.right)})"
    if isinstance(node, ast.Unary):
        return f"({'neg' if node.op == '-' else node.op} {sexpr(node.operand)})"
    if isinstance(node, ast.Cond):
        return f"(if {sexpr(node.test)} {sexpr(node.then)} {sexpr(node.orelse)})"
    if isinstance(node, ast.ListExpr):
        return "[" + " ".join(sexpr(item) for item in node.items) + "]"
    if isinstance(node, ast.DictExpr):
        return "{" + ", ".join(f"{sexpr(k)}: {sexpr(v)}" for k, v in node.items) + "}"
    if isinstance(node, ast.Index):
        return f"(index {sexpr(node.value)} {sexpr(node.index)})"
    if isinstance(node, ast.Attr):
        return f"(. {sexpr(node.value)} {node.attr})"
    if isinstance(node, ast.CallExpr):
        args = " ".join(sexpr(a.value) if a.name is None else f"{a.name}={sexpr(a.value)}" for a in node.args)
        return f"(call {sexpr(node.func)}{' ' + args if args else ''})"
    raise AssertionError(f"unexpected node {node!r}")


def network_body(body: str) -> list[ast.Stmt]:
    """The statements of `network n { input [3, 8, 8] <body> }`, after the input statement."""
    tree = parse(f"network n {{\n  input [3, 8, 8]\n{body}\n}}\n", FILE)
    (decl,) = tree.decls
    assert isinstance(decl.body[0], ast.InputStmt)
    return decl.body[1:]


def syntax_error(text: str, message: str) -> SyntaxError_:
    """Parse `text`, expecting a syntax error whose message is exactly `message`."""
    with pytest.raises(SyntaxError_, match=re.escape(message)) as info:
        parse(text, FILE)
    assert info.value.message == message
    return info.value


def at(error: NetDSLError) -> tuple[str, int, int]:
    return error.span.file, error.span.line, error.span.column


# ---- literals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("42", 42),
    ("0", 0),
    ("1_000_000", 1_000_000),
    ("2.5", 2.5),
    (".5", 0.5),
    ("3.", 3.0),
    ("1e3", 1000.0),
    ("2.5e-3", 0.0025),
    ('"abc"', "abc"),
    ('""', ""),
    (r'"say \"hi\""', 'say "hi"'),
    ('"a#b"', "a#b"),  # '#' inside a string is not a comment
    ("true", True),
    ("false", False),
    ("none", None),
])
def test_literals(text, expected):
    node = parse_one_expr(text)
    assert isinstance(node, ast.Literal)
    assert node.value == expected
    assert type(node.value) is type(expected)  # 1e3 is a float, true is not an int


def test_literal_positions():
    node = parse_one_expr("12345")
    assert (node.span.line, node.span.column, node.span.end_column) == (2, 11, 16)


# ---- operators and precedence --------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3", "(+ 1 (* 2 3))"),
    ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
    ("10 - 2 - 3", "(- (- 10 2) 3)"),
    ("a // b / c % d * e", "(* (% (/ (// a b) c) d) e)"),
    ("a - b + c", "(+ (- a b) c)"),
    ("-a * b", "(* (neg a) b)"),
    ("- -a", "(neg (neg a))"),
    ("a * -b", "(* a (neg b))"),
    ("-a.b[0]", "(neg (index (. a b) 0))"),
    ("a + 1 >= b * 2", "(>= (+ a 1) (* b 2))"),
    ("a == b", "(== a b)"),
    ("a != b", "(!= a b)"),
    ("a <= b", "(<= a b)"),
    ("a > b", "(> a b)"),
    ("not a == b", "(not (== a b))"),
    ("not not a", "(not (not a))"),
    ("a < b and c or not d", "(or (and (< a b) c) (not d))"),
    ("a or b and c", "(or a (and b c))"),
    ("a and b and c", "(and (and a b) c)"),
    ("if a then b else c + 1", "(if a b (+ c 1))"),
    ("if a then if b then 1 else 2 else 3", "(if a (if b 1 2) 3)"),
    ("if a > 1 then [a] else []", "(if (> a 1) [a] [])"),
    ("1 + (if a then 2 else 3)", "(+ 1 (if a 2 3))"),
    ("in.channels // 4", "(// (. in channels) 4)"),
    ("f(a, k=2)", "(call f a k=2)"),
    ("f()", "(call f)"),
    ("f(a,)", "(call f a)"),
    ("g(1)(2)", "(call (call g 1) 2)"),
    ("t[a][b + 1]", "(index (index t a) (+ b 1))"),
])
def test_operator_precedence(text, expected):
    assert sexpr(parse_one_expr(text)) == expected


@pytest.mark.parametrize("text, expected", [
    ("2 ** 3", "(** 2 3)"),
    ("2**3", "(** 2 3)"),  # one token, not two '*'
    ("2 ** 3 ** 2", "(** 2 (** 3 2))"),  # right-associative
    ("-2 ** 2", "(neg (** 2 2))"),  # binds tighter than unary minus, as in Python
    ("2 ** -1", "(** 2 (neg 1))"),
    ("a * b ** 2", "(* a (** b 2))"),
    ("a.b ** c[0]", "(** (. a b) (index c 0))"),
])
def test_power_operator(text, expected):
    assert sexpr(parse_one_expr(text)) == expected


def test_comparisons_do_not_chain():
    error = syntax_error("block b {\n  let v = 1 < 2 < 3\n}\n", "unexpected '<'")
    assert at(error) == (FILE, 2, 17)


# ---- lists, dicts, indexing ---------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("[]", "[]"),
    ("[1, 2, 3]", "[1 2 3]"),
    ("[1, 2,]", "[1 2]"),
    ("[[64, 2], [128, 2]]", "[[64 2] [128 2]]"),
    ("{}", "{}"),
    ('{18: [2, 2], "x": 1.5,}', '{18: [2 2], "x": 1.5}'),
    ("{18: [2, 2], 34: [3, 4]}[depth]", "(index {18: [2 2], 34: [3 4]} depth)"),
    ("units[0]", "(index units 0)"),
    ("units[-1]", "(index units (neg 1))"),
    ("[a, b][i + 1]", "(index [a b] (+ i 1))"),
])
def test_lists_dicts_and_indexing(text, expected):
    assert sexpr(parse_one_expr(text)) == expected


# ---- layer statements, labels, repetition ------------------------------------------------------

def test_layer_call_with_positional_and_keyword_arguments():
    (stmt,) = network_body("  conv1: conv(64, 7, stride=2, pad=3, bias=false)")
    assert isinstance(stmt, ast.LayerStmt)
    assert stmt.label.parts == ["conv1"] and stmt.label.is_plain
    call = stmt.unit
    assert isinstance(call, ast.Call) and call.name == "conv"
    assert [(a.name, sexpr(a.value)) for a in call.args] == [
        (None, "64"), (None, "7"), ("stride", "2"), ("pad", "3"), ("bias", "false")]
    assert stmt.repeat is None
    assert (call.name_span.line, call.name_span.column, call.name_span.end_column) == (3, 10, 14)
    assert (stmt.label.span.line, stmt.label.span.column) == (3, 3)


def test_bare_layer_name_has_no_arguments():
    (stmt,) = network_body("  flatten")
    assert stmt.label is None
    assert isinstance(stmt.unit, ast.Call) and stmt.unit.name == "flatten" and stmt.unit.args == []


def test_statements_need_no_separators():
    stmts = network_body("  relu relu6 maxpool(2) bn")
    assert [s.unit.name for s in stmts] == ["relu", "relu6", "maxpool", "bn"]
    assert [s.span.column for s in stmts] == [3, 8, 14, 25]


def test_template_label():
    (stmt,) = network_body('  "layer{i + 1}": conv(64, 3)')
    label = stmt.label
    assert not label.is_plain
    assert len(label.parts) == 2 and label.parts[0] == "layer"
    assert sexpr(label.parts[1]) == "(+ i 1)"
    # expressions inside the string report the string's position
    assert (label.span.line, label.span.column) == (3, 3)
    assert (label.parts[1].span.line, label.parts[1].span.column) == (3, 3)


def test_template_label_with_several_parts():
    (stmt,) = network_body('  "b{i}_{names[j]}x": relu')
    parts = stmt.label.parts
    assert [p if isinstance(p, str) else sexpr(p) for p in parts] == ["b", "i", "_", "(index names j)", "x"]


def test_template_label_syntax_error_is_a_syntax_error_at_the_label():
    text = 'network n {\n  input [3, 8, 8]\n  for i in range(2) {\n    "layer{i +}": relu\n  }\n}\n'
    error = syntax_error(text, "invalid expression 'i +' in label template")
    assert at(error) == (FILE, 4, 5)


def test_repetition_with_a_literal_count():
    (stmt,) = network_body("  relu x 3")
    assert stmt.label is None and stmt.unit.name == "relu"
    assert sexpr(stmt.repeat) == "3"


def test_repetition_with_an_expression_count():
    (stmt,) = network_body("  layer: conv(64, 3, pad=1) x (n - 1)")
    assert stmt.label.parts == ["layer"]
    assert stmt.unit.name == "conv"
    assert sexpr(stmt.repeat) == "(- n 1)"


def test_repetition_of_a_group():
    (stmt,) = network_body("  features: { conv(8, 3) relu } x depth")
    assert isinstance(stmt.unit, ast.Group)
    assert [s.unit.name for s in stmt.unit.body] == ["conv", "relu"]
    assert sexpr(stmt.repeat) == "depth"


def test_negative_repeat_count_needs_parentheses():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  relu x -1\n}\n",
                         "unexpected '-'; expected '(', '[', '{', a name, a number, a string or an integer")
    assert at(error) == (FILE, 3, 10)


# ---- combinators ---------------------------------------------------------------------------------

def test_residual_without_shortcut():
    (stmt,) = network_body("  residual {\n    conv(8, 3, pad=1)\n    bn\n  }")
    unit = stmt.unit
    assert isinstance(unit, ast.Combinator) and unit.keyword == "residual"
    assert unit.shortcut is None
    assert [s.unit.name for s in unit.body] == ["conv", "bn"]


def test_residual_with_group_shortcut():
    (stmt,) = network_body(
        "  block1: residual {\n    conv(8, 3, stride=2, pad=1)\n  } shortcut { conv(8, 1, stride=2) bn }")
    assert stmt.label.parts == ["block1"]
    shortcut = stmt.unit.shortcut
    assert isinstance(shortcut, ast.LayerStmt) and shortcut.label is None
    assert isinstance(shortcut.unit, ast.Group)
    assert [s.unit.name for s in shortcut.unit.body] == ["conv", "bn"]


def test_residual_with_labelled_layer_shortcut():
    (stmt,) = network_body("  residual { conv(8, 1) } shortcut proj: conv(8, 1)")
    shortcut = stmt.unit.shortcut
    assert shortcut.label.parts == ["proj"]
    assert shortcut.unit.name == "conv"


@pytest.mark.parametrize("combinator", ["residual", "inception"])
def test_combinators_take_no_arguments(combinator):
    error = syntax_error(f"network n {{\n  input [3, 8, 8]\n  {combinator}(2) {{ relu }}\n}}\n",
                         "unexpected '('; expected '{'")
    assert at(error) == (FILE, 3, 3 + len(combinator))


def test_inception_branches():
    (stmt,) = network_body(
        "  mixed: inception {\n"
        "    b1: conv(64, 1)\n"
        "    { conv(96, 1) conv(128, 3, pad=1) }\n"
        "    maxpool(3, stride=1, pad=1)\n"
        "  }")
    unit = stmt.unit
    assert isinstance(unit, ast.Combinator) and unit.keyword == "inception"
    assert len(unit.body) == 3
    assert unit.body[0].label.parts == ["b1"]
    assert isinstance(unit.body[1].unit, ast.Group)
    assert unit.body[2].unit.name == "maxpool"


# ---- control flow ---------------------------------------------------------------------------------

def test_for_with_unpacking():
    (stmt,) = network_body("  for planes, count, stride in [[64, 3, 1], [128, 4, 2]] {\n    relu\n  }")
    assert isinstance(stmt, ast.For)
    assert stmt.targets == ["planes", "count", "stride"]
    assert sexpr(stmt.iterable) == "[[64 3 1] [128 4 2]]"
    assert [s.unit.name for s in stmt.body] == ["relu"]


def test_for_with_one_target():
    (stmt,) = network_body("  for i in range(3) { relu }")
    assert stmt.targets == ["i"]
    assert sexpr(stmt.iterable) == "(call range 3)"


def test_if_elif_else():
    (stmt,) = network_body(
        "  if depth < 50 {\n    relu\n  } elif depth < 100 {\n    relu6\n"
        "  } elif wide {\n    gelu\n  } else {\n    silu\n  }")
    assert isinstance(stmt, ast.If)
    assert [sexpr(test) for test, _ in stmt.branches] == ["(< depth 50)", "(< depth 100)", "wide"]
    assert [body[0].unit.name for _, body in stmt.branches] == ["relu", "relu6", "gelu"]
    assert [s.unit.name for s in stmt.orelse] == ["silu"]


def test_if_without_else():
    (stmt,) = network_body("  if bias { relu }")
    assert len(stmt.branches) == 1 and stmt.orelse is None


def test_assert_with_and_without_message():
    with_message, without = network_body('  assert groups == 1, "only groups=1"\n  assert in.channels > 0')
    assert isinstance(with_message, ast.Assert)
    assert sexpr(with_message.test) == "(== groups 1)" and with_message.message == "only groups=1"
    assert sexpr(without.test) == "(> (. in channels) 0)" and without.message is None


def test_let():
    (stmt,) = network_body("  let width = planes * base_width // 64 * groups")
    assert isinstance(stmt, ast.Let) and stmt.name == "width"
    assert sexpr(stmt.value) == "(* (// (* planes base_width) 64) groups)"
    assert (stmt.span.line, stmt.span.column) == (3, 7)


# ---- declarations -------------------------------------------------------------------------------

def test_imports():
    tree = parse('import "std/resnet.net"\n# between\nimport "../lib/blocks.net"\n', FILE)
    assert [i.path for i in tree.imports] == ["std/resnet.net", "../lib/blocks.net"]
    assert [(i.span.line, i.span.column) for i in tree.imports] == [(1, 1), (3, 1)]
    assert tree.decls == []


def test_block_and_network_parameters():
    tree = parse(
        "block unit(out, kernel=3, pad=(kernel - 1) // 2,) {\n  conv(out, kernel, pad=pad)\n}\n"
        "block plain() { relu }\n"
        "block bare { relu }\n"
        "network net(depth=50, classes) {\n  input [3, 224, 224]\n}\n",
        FILE)
    unit, plain, bare, net = tree.decls
    assert isinstance(unit, ast.BlockDef) and unit.name == "unit"
    assert [(p.name, p.default and sexpr(p.default)) for p in unit.params] == [
        ("out", None), ("kernel", "3"), ("pad", "(// (- kernel 1) 2)")]
    assert plain.params == [] and bare.params == []
    assert isinstance(net, ast.NetworkDef)
    assert [(p.name, p.default and sexpr(p.default)) for p in net.params] == [("depth", "50"), ("classes", None)]
    assert sexpr(net.body[0].dims) == "[3 224 224]"
    assert (net.span.line, net.span.column) == (6, 9)


def test_variant():
    tree = parse('import "resnet.net"\nnetwork resnet152 = resnet(depth=152, classes=10)\n', FILE)
    (variant,) = tree.decls
    assert isinstance(variant, ast.VariantDef)
    assert (variant.name, variant.base) == ("resnet152", "resnet")
    assert [(a.name, sexpr(a.value)) for a in variant.args] == [("depth", "152"), ("classes", "10")]
    assert (variant.span.line, variant.span.column) == (2, 9)
    assert (variant.base_span.line, variant.base_span.column) == (2, 21)


def test_variant_needs_an_argument_list():
    error = syntax_error("network a = b\n", "unexpected end of file")
    assert at(error) == (FILE, 1, 14)


def test_comments_are_ignored_everywhere():
    tree = parse(
        "# header\n"
        "network n(depth=1) {  # after a brace\n"
        "  input [3, 8, 8]     # trailing\n"
        "  # a whole line\n"
        "  conv(4, # inside an argument list\n"
        "       3)\n"
        "}\n"
        "# trailing comment without newline", FILE)
    (net,) = tree.decls
    assert [type(s).__name__ for s in net.body] == ["InputStmt", "LayerStmt"]
    assert [sexpr(a.value) for a in net.body[1].unit.args] == ["4", "3"]


def test_empty_file_and_comment_only_file():
    assert parse("", FILE).decls == []
    assert parse("# nothing here\n", FILE).decls == []


def test_keywords_are_contextual():
    # The lexer is contextual: 'x' is the repetition keyword only where a repetition may follow, and
    # lexes as a name elsewhere. (The checker then refuses to bind reserved words; see test_check.py.)
    (let, stmt) = network_body("  let x = 2\n  conv(x, 3)")
    assert let.name == "x"
    assert sexpr(stmt.unit.args[0].value) == "x"


# ---- syntax errors ---------------------------------------------------------------------------------

def test_equals_instead_of_label_colon():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  conv1 = conv(3)\n}\n",
                         "unexpected '='; expected '(', '->', ':', '{', '}', a name or a string")
    assert at(error) == (FILE, 3, 9)
    assert error.hint == "a label is written 'name: layer(...)'"


def test_syntax_error_format_is_compiler_like():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  conv1 = conv(3)\n}\n",
                         "unexpected '='; expected '(', '->', ':', '{', '}', a name or a string")
    assert error.format() == (
        "grammar_test.net:3:9: error: unexpected '='; expected '(', '->', ':', '{', '}', a name or a string\n"
        "    3 |   conv1 = conv(3)\n"
        "      |         ^\n"
        "  hint: a label is written 'name: layer(...)'"
    )
    assert str(error) == error.format()
    assert isinstance(error, NetDSLError)


def test_unclosed_paren_at_end_of_file():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  conv(3, 3", "unexpected end of file")
    assert at(error) == (FILE, 3, 12)
    assert error.hint == "is a '}' or ')' missing?"


def test_unclosed_brace_at_end_of_file():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  relu\n", "unexpected end of file")
    # the position just past the last line's text
    assert at(error) == (FILE, 3, 7)
    assert error.hint == "is a '}' or ')' missing?"


def test_unclosed_paren_before_closing_brace():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  conv(3, 3\n}\n", "unexpected '}'; expected ')' or ','")
    assert at(error) == (FILE, 4, 1)


def test_extra_closing_paren():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  conv(3, 3))\n}\n",
                         "unexpected ')'; expected '->', '{', '}', a name or a string")
    assert at(error) == (FILE, 3, 13)


def test_single_quoted_string():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  let s = 'abc'\n}\n", "unexpected character \"'\"")
    assert at(error) == (FILE, 3, 11)
    assert error.hint == "strings use double quotes"


def test_unterminated_string():
    error = syntax_error('network n {\n  input [3, 8, 8]\n  let s = "abc\n}\n', "unexpected character '\"'")
    assert at(error) == (FILE, 3, 11)


def test_c_style_operator():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  if a == 1 && b { relu }\n}\n", "unexpected character '&'")
    assert at(error) == (FILE, 3, 13)
    assert error.hint == "operators are == != < <= > >=, and / or / not"


def test_x_as_a_label():
    error = syntax_error("network n {\n  input [3, 8, 8]\n  x: relu\n}\n", "unexpected 'x'")
    assert at(error) == (FILE, 3, 3)
    assert error.hint == "'x' is reserved for repetition ('layer(...) x 3'); choose another name"


def test_x_as_a_label_after_a_layer():
    with pytest.raises(SyntaxError_, match="unexpected") as info:
        parse("network n {\n  input [3, 8, 8]\n  relu\n  x: relu\n}\n", FILE)
    error = info.value
    assert error.span.line == 4
    assert error.hint == "'x' is reserved for repetition ('layer(...) x 3'); choose another name"


def test_single_equals_in_a_condition():
    with pytest.raises(SyntaxError_, match="unexpected '='") as info:
        parse("network n {\n  input [3, 8, 8]\n  if a = 1 { relu }\n}\n", FILE)
    error = info.value
    assert at(error) == (FILE, 3, 8)
    assert error.hint == "comparison is '=='"


def test_statement_outside_a_declaration():
    error = syntax_error("relu\n", "unexpected 'relu'; expected 'block', 'def', 'import' or 'network'")
    assert at(error) == (FILE, 1, 1)


def test_syntax_error_carries_the_file_name():
    with pytest.raises(SyntaxError_) as info:
        parse("network {", "some/dir/model.net")
    assert info.value.span.file == "some/dir/model.net"
    assert info.value.format().startswith("some/dir/model.net:1:9: error: unexpected '{'")


def test_a_missing_closing_bracket_points_back_at_the_opening_one():
    """The parser notices a missing `)` at the next line's first token; the note shows the `(`."""
    text = 'network m {\n  input [3, 8, 8]\n  conv(8, 3  # "(" in a comment is no bracket\n  relu\n}\n'
    with pytest.raises(SyntaxError_) as caught:
        parse(text, "m.net")
    error = caught.value
    assert (error.message, error.span.line) == ("unexpected 'relu'; expected ')' or ','", 4)
    assert [(note, span.line, span.column) for note, span in error.notes] == [("the '(' is not closed", 3, 7)]
    assert "  note: the '(' is not closed, at m.net:3:7\n    3 |   conv(8, 3" in error.format()
    with pytest.raises(SyntaxError_) as caught:
        parse('network m {\n  input [3, 8, 8]\n  let s = "[" + "x"\n  conv(1, 1)\n', "m.net")
    assert caught.value.message == "unexpected end of file"
    assert [(span.line, span.column) for _, span in caught.value.notes] == [(1, 11)]  # the '{', not the string's '['
    with pytest.raises(SyntaxError_) as caught:  # on the error's own line the caret says it all
        parse("network m {\n  input [3, 8, 8]\n  conv(8, 3 relu)\n}\n", "m.net")
    assert caught.value.notes == ()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("mark", ["", "\ufeff"])
def test_byte_order_mark_and_every_line_ending_read_alike(newline, mark):
    """issue 13 item 17: a BOM was 'unexpected character', a CR-only file one comment to its end."""
    lines = ["# a comment", "network n {", "  input [3, 8, 8]", "  conv(4, 3) relu", "}", ""]
    text = mark + newline.join(lines)
    tree = parse(text, "f.net")
    conv = tree.decls[0].body[1].unit
    assert (conv.span.line, conv.span.column, conv.span.end_column) == (4, 3, 13)
    with pytest.raises(SyntaxError_) as caught:
        parse(text.replace("relu", "relu )"), "f.net")
    assert (caught.value.span.line, caught.value.span.column) == (4, 19)
    assert caught.value.format().splitlines()[1] == "    4 |   conv(4, 3) relu )"


# ---- the LALR loop ----------------------------------------------------------------------------

_BROKEN = ["network n { conv(3 }\n", "block b {\n", "network n { input [3, 8, 8] @ }\n",
           "network n {\n  input [3, 8, 8]\n  conv(4, 3) conv(4,, 3)\n}\n", "let = 3\n",
           'import "x.net" network\n', "network n { input [3, 8, 8] residual { conv(3, 3) ] }\n"]


def _shipped_sources() -> list[tuple[str, str]]:
    """(path, text) of every .net file shipped: networks/, the standard library and examples/."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted([*root.glob("networks/*.net"), *root.glob("netdsl/std/*.net"), *root.glob("examples/**/*.net")])
    return [(str(file), file.read_text(encoding="utf-8")) for file in files]


def test_the_fast_lalr_loop_builds_what_larks_own_loop_builds():
    """netdsl drives lark's parse table with its own loop (NOTE: [The LALR loop]); lark's loop on
    the same table and callbacks is the reference: the same AST (spans included) for every file
    shipped, the same error for broken ones."""
    from netdsl.combinators import COMBINATORS
    from netdsl.errors import Span
    from netdsl.parse import _build_parser, _parse_with, _ToAst, _syntax_error, source_text
    from lark.exceptions import UnexpectedInput

    parser = _build_parser(tuple(sorted(COMBINATORS)))
    automaton = parser.parser.parser.parser
    fast = automaton.parse_from_state

    def both(text: str, path: str):
        results = []
        for loop in (fast, automaton.netdsl_lark_loop):
            automaton.parse_from_state = loop
            try:
                results.append(_parse_with(parser, text, "start", _ToAst(path), Span(path, 1, 1), "the file"))
            except UnexpectedInput as error:
                results.append(str(_syntax_error(error, text, path)))
            finally:
                automaton.parse_from_state = fast
        return results

    sources = _shipped_sources()
    assert len(sources) > 90
    for path, text in sources:
        ours, larks = both(source_text(text), path)
        assert isinstance(ours, ast.SourceFile) and ours == larks, path
    for text in _BROKEN:
        ours, larks = both(text, FILE)
        assert isinstance(ours, str) and ours == larks, text


def test_the_parser_tables_are_read_from_the_cache_and_parse_the_same(tmp_path, monkeypatch):
    """NOTE: [The parser cache]: the first process writes the tables, a later one reads them instead
    of building them, and the parser read back builds the same AST for every shipped file."""
    import netdsl.parse as parse
    from netdsl.errors import Span

    grammar = parse.grammar_text()
    built = parse._lark(grammar, cache=tmp_path)
    [written] = tmp_path.glob("parser-*.json")

    def no_build(*args, **kwargs):
        raise AssertionError("built the tables although they were in the cache")

    monkeypatch.setattr(parse, "Lark", type("NoBuild", (parse.Lark,), {"__init__": no_build}))
    loaded = parse._lark(grammar, cache=tmp_path)
    for parser in (built, loaded):
        parse._Reducer(parser)
    sources = _shipped_sources()
    assert len(sources) > 60
    for path, text in sources:
        text = parse.source_text(text)
        asts = [parse._parse_with(parser, text, "start", parse._ToAst(path), Span(path, 1, 1), "the file")
                for parser in (built, loaded)]
        assert asts[0] == asts[1], path
    assert written.name.startswith("parser-")


def test_a_damaged_or_unwritable_parser_cache_is_rebuilt_or_skipped(tmp_path):
    import netdsl.parse as parse

    grammar = parse.grammar_text()
    folder = tmp_path / "cache"
    parse._lark(grammar, cache=folder)
    assert folder.stat().st_mode & 0o777 == 0o700  # a cache directory only its user reads
    [written] = folder.glob("parser-*.json")
    good = written.read_bytes()
    written.write_bytes(good[: len(good) // 2])  # a cut-off file, as a crash mid-write would leave
    assert parse._lark(grammar, cache=folder).parse("network n() { input [3, 8, 8] }", start="start")
    import json

    assert written.name == f"parser-{json.loads(written.read_bytes())['key']}.json"  # rebuilt, written whole
    assert [p.name for p in folder.iterdir()] == [written.name]  # no temporary file left
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert parse._lark(grammar, cache=blocked / "cache").parse("network n() { input [3, 8, 8] }", start="start")
    assert blocked.read_text() == "not a directory"
