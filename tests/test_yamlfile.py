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
