"""Parse PromQL expressions (run by the deploy virtualenv's Python, which has promql-parser).

    python promql_names.py < ["expr", …]   ->   [{"error": …, "metrics": […], "labels": […]}, …]

``metrics`` are the selected metric names, ``labels`` every label name the expression uses
(matchers, by/without, on/ignoring, group_left/right).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import promql_parser as pp


def analyse(expr: str) -> dict[str, Any]:
    try:
        tree = pp.parse(expr)
    except ValueError as exc:
        return {"error": str(exc), "metrics": [], "labels": []}
    metrics: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, pp.VectorSelector):
            if node.name:
                metrics.add(node.name)
            for matcher in node.matchers.matchers if node.matchers else ():
                if matcher.name != "__name__":
                    labels.add(matcher.name)
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or ())
        return True

    pp.walk(tree, visit)
    return {"error": None, "metrics": sorted(metrics), "labels": sorted(labels)}


if __name__ == "__main__":
    json.dump([analyse(e) for e in json.load(sys.stdin)], sys.stdout)
