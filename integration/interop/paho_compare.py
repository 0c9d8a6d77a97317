"""Compares a run of Eclipse's paho interoperability suite (run_each.py output, one JSON line
per test) against Mosquitto's baseline: every test Mosquitto passes must pass against mqws,
unless paho-known.txt names it with the reason. Prints one PASS/FAIL/KNOWN line per test and
"N passed, M failed" counts on the last line; exits 1 on an unexplained failure.
Usage: paho_compare.py BASELINE.json KNOWN.txt RESULTS.jsonl..."""
import json, sys

baseline = json.load(open(sys.argv[1]))
known = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line and not line.startswith("#"):
        name, _, reason = line.partition(" ")
        known[name] = reason.strip()
results = {}
for path in sys.argv[3:]:
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "test" in r:
            results[f"{r['suite']}:{r['test']}"] = r["result"]

passed = failed = 0
for name, mosquitto in sorted(baseline.items()):
    got = results.get(name, "missing")
    if got == "pass":
        passed += 1
        print(f"PASS {name}")
    elif mosquitto != "pass":
        print(f"SKIP {name}: {got} (Mosquitto: {mosquitto} too)")
    elif name in known:
        print(f"KNOWN {name}: {got}; {known[name]}")
    else:
        failed += 1
        print(f"FAIL {name}: {got}, Mosquitto passes it")
print(f"paho interop: {passed} of {len(baseline)} pass against mqws", file=sys.stderr)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
