"""Turn trial's closing line into `N passed, M failed, K skipped`; fail on zero tests."""

import re
import sys

text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
match = re.search(r"^(PASSED|FAILED) \((.*)\)\s*$", text, re.M)
counts = dict(
    (key, int(value))
    for key, value in re.findall(r"(\w+)=(\d+)", match.group(2) if match else "")
)
passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
failed = counts.get("failures", 0) + counts.get("errors", 0)
failed += counts.get("unexpectedSuccesses", 0)
print(f"{passed} passed, {failed} failed, {counts.get('skips', 0)} skipped")
sys.exit(1 if passed + failed == 0 or failed else 0)
