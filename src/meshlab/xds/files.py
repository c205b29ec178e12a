"""Watch a file for changes, the way a control plane watches its intent.

    async for text in watch_file("intent.yaml"):
        ...   # the file's text now, then each time it changes

Polling, compared by content: no dependency, works on every filesystem, sees a file
replaced by rename (as editors and `meshlab check` write it) as well as one rewritten in
place, and never reports a save that changed nothing. A change is seen within INTERVAL.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

log = logging.getLogger("meshlab.xds")


async def watch_file(path: str | Path, *, interval: float = 0.05) -> AsyncIterator[str]:
    """Yield the text of PATH now (once it exists) and after every change."""
    path = Path(path)
    last: bytes | None = None
    missing_reported = False
    while True:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if not missing_reported:
                log.warning("%s does not exist; waiting for it", path)
                missing_reported = True
            data = None
        if data is not None and data != last:
            last, missing_reported = data, False
            yield data.decode("utf-8", errors="replace")
        await asyncio.sleep(interval)
