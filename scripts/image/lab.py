#!/usr/bin/env python3
"""The workloads of scripts/image.sh's pod tests (the lab image, localhost/meshcap-lab:dev).

    lab.py http NAME PORT...        an application: an HTTP/1.0 server on each PORT
    lab.py proxy OUT_PORT IN_PORT   the sidecar proxy's stand-in (run as uid/gid 1337)
    lab.py get HOST PORT            a client: one GET, prints the answer's body
    lab.py kube POD_YAML            prints the podman arguments that run the Pod in POD_YAML
    lab.py same-rules PAYLOAD SAVE  compares an iptables-restore payload with iptables-save output
    lab.py oci-index LAYOUT REF     prints "ARCH IMAGE-ID" for each image of an OCI layout's index

The HTTP server answers every request with one line saying who answered and what it saw:

    server=NAME local=IP:PORT peer=IP:PORT via=HEADERS

where HEADERS are the request's X-Meshcap-Proxy headers (`-` when none). The proxy stand-in does
what Envoy does with the connections istio-init's rules send it: it accepts on OUT_PORT
(outbound, 15001) and IN_PORT (inbound, 15006), recovers the original destination
(SO_ORIGINAL_DST), connects there — for inbound from 127.0.0.6, as Envoy's inbound passthrough
does — adds `X-Meshcap-Proxy: outbound|inbound orig=IP:PORT` to the request head, and relays
the answer. So an answer's `via` and `peer` show the path a request took.

`kube` translates deploy/pod.yaml for podman (whose `kube play` cannot run init containers to
completion): it reads only the fields it knows and refuses any other, so the pod the tests run
is the file's, not a second copy of it. Ignored on purpose: metadata, restartPolicy and
resources (scheduling only); the image is checked and replaced by the caller. Output, one line per container, tab-separated:
`init|app<TAB>NAME<TAB>IMAGE<TAB>podman create option...<TAB>--<TAB>argument...`.

`same-rules` is the tests' own comparison, independent of meshcap's `check`: the same user
chains, and in every chain the same rules in the same order, where a rule is the multiset of its
options (iptables-save reorders them and adds the implicit `-m tcp` / `-m udp`). Exit 0 when
equal, 1 with the differences otherwise.
"""

import os
import signal
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80
HEAD_LIMIT = 64 * 1024
TIMEOUT = 5.0


def log(*parts):
    print(*parts, flush=True)


def read_head(conn):
    """The request head (up to the blank line) and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too long")
    head, sep, rest = data.partition(b"\r\n\r\n")
    return head + sep, rest


def addr(pair):
    return "%s:%d" % (pair[0], pair[1])


# ---- http -----------------------------------------------------------------------------------


def serve_http(name, port):
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", port))
    lst.listen(64)
    log("http %s listening on :%d" % (name, port))
    while True:
        conn, peer = lst.accept()
        threading.Thread(target=answer_http, args=(name, conn, peer), daemon=True).start()


def answer_http(name, conn, peer):
    with conn:
        conn.settimeout(TIMEOUT)
        try:
            head, _ = read_head(conn)
        except (OSError, ValueError, KeyError) as e:
            log("http %s: %s: %s" % (name, addr(peer), e))
            return
        via = [
            line.split(b":", 1)[1].strip().decode("ascii", "replace")
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-meshcap-proxy:")
        ]
        body = "server=%s local=%s peer=%s via=%s\n" % (
            name,
            addr(conn.getsockname()),
            addr(peer),
            ";".join(via) or "-",
        )
        log("http " + body.strip())
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body.encode())
        )


# ---- proxy ----------------------------------------------------------------------------------


def original_dst(conn):
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def serve_proxy(direction, port, own_ports):
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", port))
    lst.listen(64)
    log("proxy %s listening on :%d" % (direction, port))
    while True:
        conn, peer = lst.accept()
        threading.Thread(
            target=forward, args=(direction, conn, peer, own_ports), daemon=True
        ).start()


def forward(direction, conn, peer, own_ports):
    with conn:
        conn.settimeout(TIMEOUT)
        try:
            orig = original_dst(conn)
        except OSError as e:
            log("proxy %s: %s: no original destination: %s" % (direction, addr(peer), e))
            return
        if orig[1] in own_ports:
            # Not redirected (or redirected back to the proxy): never connect to ourselves.
            log("proxy %s: %s: original destination %s is the proxy" % (direction, addr(peer), addr(orig)))
            return
        try:
            head, rest = read_head(conn)
            line, sep, headers = head.partition(b"\r\n")
            mark = ("X-Meshcap-Proxy: %s orig=%s" % (direction, addr(orig))).encode()
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            up.settimeout(TIMEOUT)
            if direction == "inbound":
                up.bind(("127.0.0.6", 0))
            up.connect(orig)
            with up:
                up.sendall(line + b"\r\n" + mark + b"\r\n" + headers + rest)
                log("proxy %s: %s -> %s (from %s)" % (direction, addr(peer), addr(orig), addr(up.getsockname())))
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    conn.sendall(chunk)
        except (OSError, ValueError, KeyError) as e:
            log("proxy %s: %s -> %s: %s" % (direction, addr(peer), addr(orig), e))


# ---- get ------------------------------------------------------------------------------------


def get(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host.encode())
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    _, _, body = data.partition(b"\r\n\r\n")
    sys.stdout.write(body.decode("utf-8", "replace"))


# ---- same-rules -----------------------------------------------------------------------------


def rule_key(words):
    """A rule's options as a sorted tuple; `!` stays with its option, values with their option."""
    groups, cur = [], []
    for w in words:
        if (w.startswith("-") or w == "!") and cur and cur != ["!"]:
            groups.append(" ".join(cur))
            cur = []
        cur.append(w)
    if cur:
        groups.append(" ".join(cur))
    protos = {g.split()[-1] for g in groups if g.startswith("-p ")}
    return tuple(sorted(g for g in groups if not (g.startswith("-m ") and g.split()[1] in protos)))


def chains_of(text):
    """{table: ({user chains}, {chain: [rule keys in order]})} of a payload or a save output."""
    tables, table = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            tables.setdefault(table, (set(), {}))
        elif line.startswith("-N "):
            tables[table][0].add(line.split()[1])
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            if policy == "-":
                tables[table][0].add(name)
        elif line.startswith("-A "):
            words = line.split()
            tables[table][1].setdefault(words[1], []).append(rule_key(words[2:]))
        else:
            raise ValueError("unexpected line: %r" % line)
    return tables


def same_rules(payload_path, save_path):
    with open(payload_path) as f:
        want = chains_of(f.read())
    with open(save_path) as f:
        got = chains_of(f.read())
    diffs = []
    for table in sorted(set(want) | set(got)):
        w_chains, w_rules = want.get(table, (set(), {}))
        g_chains, g_rules = got.get(table, (set(), {}))
        if w_chains != g_chains:
            diffs.append("%s: user chains %s != %s" % (table, sorted(w_chains), sorted(g_chains)))
        for chain in sorted(set(w_rules) | set(g_rules)):
            if w_rules.get(chain, []) != g_rules.get(chain, []):
                diffs.append(
                    "%s %s:\n  payload: %s\n  live:    %s"
                    % (table, chain, w_rules.get(chain, []), g_rules.get(chain, []))
                )
    for d in diffs:
        print(d)
    return 1 if diffs else 0


# ---- oci-index ------------------------------------------------------------------------------


def oci_index(layout, ref):
    """The images an OCI image layout's index REF lists: architecture and config digest (which is
    the image ID podman shows)."""
    import json

    def blob(digest):
        algo, hexa = digest.split(":", 1)
        with open("%s/blobs/%s/%s" % (layout, algo, hexa)) as f:
            return json.load(f)

    with open(layout + "/index.json") as f:
        top = json.load(f)
    refs = [
        m
        for m in top["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    ]
    if len(refs) != 1:
        raise ValueError("%s: %d entries named %s" % (layout, len(refs), ref))
    for m in blob(refs[0]["digest"])["manifests"]:
        config = blob(m["digest"])["config"]["digest"]
        print("%s %s" % (m["platform"]["architecture"], config.split(":", 1)[1]))
    return 0


# ---- kube -----------------------------------------------------------------------------------


class Refused(Exception):
    pass


def take(mapping, where, known):
    """The mapping's keys, refusing any key not in `known`."""
    if not isinstance(mapping, dict):
        raise Refused("%s: expected a mapping" % where)
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise Refused("%s: cannot translate %s" % (where, ", ".join(unknown)))
    return mapping


def strings(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused("%s: expected a list of strings" % where)
    return value


def security_options(sc, where):
    take(
        sc,
        where,
        [
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "privileged",
            "allowPrivilegeEscalation",
            "capabilities",
            "readOnlyRootFilesystem",
        ],
    )
    opts = []
    user = sc.get("runAsUser")
    group = sc.get("runAsGroup")
    if user is not None:
        opts.append("--user=%d" % user if group is None else "--user=%d:%d" % (user, group))
    if sc.get("runAsNonRoot") and user in (None, 0):
        raise Refused("%s: runAsNonRoot with user %s" % (where, user))
    if sc.get("privileged"):
        opts.append("--privileged")
    if sc.get("allowPrivilegeEscalation") is False:
        opts.append("--security-opt=no-new-privileges")
    caps = take(sc.get("capabilities", {}), where + ".capabilities", ["add", "drop"])
    for cap in strings(caps.get("drop", []), where + ".capabilities.drop"):
        opts.append("--cap-drop=" + cap.lower())
    for cap in strings(caps.get("add", []), where + ".capabilities.add"):
        opts.append("--cap-add=" + cap.lower())
    if sc.get("readOnlyRootFilesystem"):
        # Only what the Pod mounts is writable (podman would add tmpfs on /run, /tmp, /var/tmp).
        opts += ["--read-only", "--read-only-tmpfs=false"]
    return opts


def kube(path):
    import yaml  # python3-yaml, in the lab image only

    with open(path) as f:
        pod = yaml.safe_load(f)
    take(pod, "Pod", ["apiVersion", "kind", "metadata", "spec"])
    if pod.get("kind") != "Pod":
        raise Refused("kind is %r, not Pod" % pod.get("kind"))
    spec = take(
        pod["spec"], "spec", ["restartPolicy", "initContainers", "containers", "volumes"]
    )
    volumes = {}
    for i, v in enumerate(spec.get("volumes", [])):
        take(v, "spec.volumes[%d]" % i, ["name", "emptyDir"])
        empty = take(v.get("emptyDir") or {}, "spec.volumes[%d].emptyDir" % i, ["medium"])
        volumes[v["name"]] = empty.get("medium", "")
    lines = []
    for kind, key in (("init", "initContainers"), ("app", "containers")):
        for i, c in enumerate(spec.get(key, [])):
            where = "spec.%s[%d]" % (key, i)
            take(
                c,
                where,
                ["name", "image", "command", "args", "securityContext", "volumeMounts", "resources"],
            )
            opts = security_options(c.get("securityContext", {}), where + ".securityContext")
            for j, m in enumerate(c.get("volumeMounts", [])):
                take(m, "%s.volumeMounts[%d]" % (where, j), ["name", "mountPath"])
                if m["name"] not in volumes:
                    raise Refused("%s: volume %s is not declared" % (where, m["name"]))
                # An emptyDir (either medium) is a fresh, private, writable directory.
                opts.append("--tmpfs=%s:rw" % m["mountPath"])
            command = strings(c.get("command", []), where + ".command")
            args = strings(c.get("args", []), where + ".args")
            if command:
                opts.append("--entrypoint=" + command[0])
                argv = command[1:] + args
            else:
                argv = args
            for word in [c["name"], c["image"]] + opts + argv:
                if "\t" in word or "\n" in word:
                    raise Refused("%s: a tab or newline in %r" % (where, word))
            lines.append("\t".join([kind, c["name"], c["image"]] + opts + ["--"] + argv))
    print("\n".join(lines))


def main(argv):
    # PID 1 in its container: leave at once when the engine stops the container.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        cmd = argv[1]
        if cmd == "http" and len(argv) >= 4:
            ports = [int(p) for p in argv[3:]]
            for p in ports[1:]:
                threading.Thread(target=serve_http, args=(argv[2], p), daemon=True).start()
            serve_http(argv[2], ports[0])
        elif cmd == "proxy" and len(argv) == 4:
            out, inb = int(argv[2]), int(argv[3])
            threading.Thread(target=serve_proxy, args=("inbound", inb, (out, inb)), daemon=True).start()
            serve_proxy("outbound", out, (out, inb))
        elif cmd == "get" and len(argv) == 4:
            get(argv[2], int(argv[3]))
        elif cmd == "kube" and len(argv) == 3:
            kube(argv[2])
        elif cmd == "same-rules" and len(argv) == 4:
            return same_rules(argv[2], argv[3])
        elif cmd == "oci-index" and len(argv) == 4:
            return oci_index(argv[2], argv[3])
        else:
            sys.stderr.write(__doc__)
            return 2
    except Refused as e:
        sys.stderr.write("lab.py kube: %s\n" % e)
        return 1
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write("lab.py %s: %s\n" % (cmd, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
