"""The verdict cache: a rerun of the same completions costs nothing, and processes share one paid request."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from .prompts import PROMPT_VERSION



class VerdictCache:
    """SQLite cache keyed by (model, prompt version, question, final answer, reference)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        # several training processes share one cache: readers do not wait for a writer (WAL), and a
        # writer waits up to `timeout` for another instead of failing
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, until REAL NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, question: str, answer: str, reference: str) -> str:
        blob = json.dumps([model, PROMPT_VERSION, question, answer, reference], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def claim(self, key: str, seconds: float) -> bool:
        """The right to ask the judge about `key` for `seconds`, or False while another thread or process
        (a training process beside this one) holds it. A claim past its time (its holder died) is taken over."""
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM claims WHERE key = ? AND until < ?", (key, now))
            taken = self._db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?)", (key, now + seconds)).rowcount
            self._db.commit()
        return taken == 1

    def release(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM claims WHERE key = ?", (key,))
            self._db.commit()


