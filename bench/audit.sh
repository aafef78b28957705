#!/bin/sh
# bench/audit.sh [N]: `meshcap audit` speed on N pods (default 10000), as `kubectl get pods -A -o
# json` prints them: a List of copies of the injected pods of tests/fixtures/audit/pods.json
# (renamed, every one with an istio-init or istio-validation container). Prints the wall time
# of the whole run and per 1,000 pods (target: well under a second per 1,000 pods). Touches no
# namespace; needs python3 and the release binary (built here).
set -e
n=${1:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$root/tests/fixtures/audit/pods.json" "$n" > "$tmp/pods.json" <<'PY'
import copy, json, sys
src = json.load(open(sys.argv[1]))
pods = [p for p in src["items"] if p["spec"].get("initContainers")]
items = []
for i in range(int(sys.argv[2])):
    p = copy.deepcopy(pods[i % len(pods)])
    p["metadata"]["name"] = f"{p['metadata']['name']}-{i}"
    items.append(p)
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
PY
python3 - "$root/target/release/meshcap" "$tmp/pods.json" "$n" <<'PY'
import subprocess, sys, time
binary, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = []
for _ in range(5):
    t = time.perf_counter()
    r = subprocess.run([binary, "audit", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs.append(time.perf_counter() - t)
    assert r.returncode == 1, r.stderr  # the fixtures hold failing pods
best = min(runs)
print(f"audit of {n} pods: best {best*1000:.0f} ms of 5 runs, {best*1000/(n/1000):.1f} ms per 1,000 pods")
PY
