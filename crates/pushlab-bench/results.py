"""What the report scripts share: reading a results directory of run.sh
(each measurement's NAME.json, the command as NAME.cmd, why it was not run
as NAME.skipped) and writing its figures into Markdown tables."""
import json
from pathlib import Path

# At or above this load-generator CPU in the first failing step, the client
# was the limit, and the sustained rate is a lower bound for the server.
CLIENT_LIMIT = 85.0


class Results:
    """One results directory."""

    def __init__(self, out):
        self.out = Path(out)

    def load(self, name):
        """NAME.json, or None when it is missing or unreadable."""
        try:
            return json.loads((self.out / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def cmd(self, name):
        """The command NAME ran, or None when it did not run."""
        path = self.out / f"{name}.cmd"
        return path.read_text().strip() if path.exists() else None

    def why_missing(self, name, otherwise):
        """Why NAME has no result: what its .skipped says, or OTHERWISE."""
        path = self.out / f"{name}.skipped"
        return path.read_text().strip() if path.exists() else otherwise


def ms(x):
    return "–" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def pct(x):
    return "–" if x is None else f"{x:.0f}%"


def num(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def lost(r):
    """Events a run never delivered, by count and by seq."""
    return r["missing"] + r["missing_seqs"]


def failure_reason(step):
    """Why a search's step failed, in words; – for none."""
    if step is None:
        return "–"
    reasons = []
    if step["connected"] < step["subscribers"]:
        reasons.append(f"{step['subscribers'] - step['connected']} could not connect")
    if step["latency"]["p99_ms"] > 50:
        reasons.append(f"p99 {ms(step['latency']['p99_ms'])} ms")
    if lost(step):
        reasons.append(f"{lost(step):,} undelivered after 3 s")
    dup = step["duplicated"] + step["duplicated_seqs"]
    if dup:
        reasons.append(f"{dup:,} duplicated")
    return ", ".join(reasons) or "–"
