"""YAML loading keeps positions, and a syntax error says file, line and column."""

from __future__ import annotations

import pytest

from meshlab import yamlfile
from meshlab.errors import YamlSyntaxError

DOC = """\
static_resources:
  clusters:
  - name: app
    type: STATIC
  - name: other
    type: STRICT_DNS
"""


def test_positions_point_at_keys_and_items(tmp_path):
    path = tmp_path / "envoy.yaml"
    path.write_text(DOC)
    doc = yamlfile.load(path)
    assert doc.location(("static_resources", "clusters", 1, "type")).line == 6
    assert doc.location(("static_resources", "clusters", 0)).line == 3
    # An unknown path falls back to its closest known parent.
    assert doc.location(("static_resources", "clusters", 1, "missing", "deeper")).line == 5
    assert yamlfile.format_path(("static_resources", "clusters", 1, "type")) == "static_resources.clusters[1].type"


@pytest.mark.parametrize("text, line, column, fix", [
    ("admin:\n  address: [\n", 3, 1, "syntax"),
    ("a: 1\n\tb: 2\n", 2, 1, "spaces"),
    ("a:\n  b: 1\n c: 2\n", 3, 2, "indentation"),
])
def test_syntax_errors_have_line_column_and_a_fix(tmp_path, text, line, column, fix):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(YamlSyntaxError) as caught:
        yamlfile.load(path)
    error = caught.value
    assert (error.where.line, error.where.column) == (line, column)
    assert fix in error.fix
    assert "broken.yaml" in error.message


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(YamlSyntaxError, match="does not exist"):
        yamlfile.load(tmp_path / "nope.yaml")


def test_an_unclosed_quote_is_named_where_it_opens(tmp_path):
    # The string runs on to the next quote, three lines down, where the parser fails.
    file = tmp_path / "signals.yaml"
    file.write_text('request_rate: "sum(rate(x[1m]))\n\n# a comment\nerror_ratio: ""\np99: ""\n')
    with pytest.raises(YamlSyntaxError) as caught:
        yamlfile.load(file)
    assert caught.value.where.line == 4
    assert caught.value.fix == "the quoted text that starts on line 1 ends only on line 4: close its quote on line 1"


def test_a_quoted_string_over_lines_is_not_blamed_for_another_error(tmp_path):
    file = tmp_path / "a.yaml"
    file.write_text('a: "one\n  two"\nb:\n  - 1\n - 2\n')
    with pytest.raises(YamlSyntaxError) as caught:
        yamlfile.load(file)
    assert "close its quote" not in caught.value.fix
