"""Parse-checks Swift files with tree-sitter-swift: any ERROR or MISSING node
fails. This is a syntax check only; no Swift compiler runs on this machine.
tree-sitter-swift misreads the valid `@_documentation(visibility: private)`
attribute, and the valid empty-tuple closure `{ () }` (uniffi writes
`let writeReturn = { () }`); both are blanked out (same length, so positions
stay right) before parsing, and how many were blanked is printed."""
import re
import sys

import tree_sitter_swift
from tree_sitter import Language, Parser

DOC_ATTR = re.compile(rb"@_documentation\(visibility:\s*private\)")
UNIT_CLOSURE = re.compile(rb"\{ \(\) \}")


def problems(node, out):
    if node.is_error or node.is_missing:
        out.append(node)
    if node.has_error:
        for child in node.children:
            problems(child, out)
    return out


def main(paths):
    if not paths:
        print("no Swift files given")
        return 1
    parser = Parser(Language(tree_sitter_swift.language()))
    bad = 0
    for path in paths:
        src = open(path, "rb").read()
        src, n_doc = DOC_ATTR.subn(lambda m: b" " * len(m.group(0)), src)
        src, n_unit = UNIT_CLOSURE.subn(lambda m: b"{" + b" " * (len(m.group(0)) - 2) + b"}", src)
        found = problems(parser.parse(src).root_node, [])
        if found:
            bad += 1
            for n in found[:5]:
                row, col = n.start_point
                kind = "missing" if n.is_missing else "error"
                print(f"{path}:{row + 1}:{col + 1}: parse {kind} near {src[n.start_byte:n.end_byte][:60]!r}")
        else:
            blanked = f" ({n_doc} @_documentation, {n_unit} {{ () }} blanked)" if n_doc or n_unit else ""
            print(f"parsed OK: {path}{blanked}")
    print(f"{len(paths) - bad} Swift files parsed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
