"""JSON from strangers: request bodies, token headers and payloads, IdP answers.

``json.loads`` raises RecursionError (not ValueError) for deeply nested input such as
``[[[[...``; callers that catch ValueError for "not JSON" would let it escape as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def loads_untrusted(
    data: str | bytes, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
) -> Any:
    """``json.loads`` whose every failure, deep nesting included, is a ValueError."""
    try:
        return json.loads(data, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
