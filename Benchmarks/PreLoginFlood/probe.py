#!/usr/bin/env python3
"""Probes a real `conclave-coordinator serve` before login and at revocation (issue 14, items 1 and 2).

Usage: probe.py COORDINATOR_BINARY CLIENT_BINARY MODEL [--peers N] [--addresses A] [--seconds S]

Starts the coordinator on loopback with two enrolled clients, then:
  flood     N raw TCP peers from A source addresses (127.0.0.2...) trickle a TLS record a byte every
            0.5 s for S seconds; 2 s in, clinic-1 logs in (TLS + hello) and the time until the
            coordinator logs it connected is measured; at the end, the peers still open are counted.
  oversized clinic-2 sends a hello header announcing 1 MiB and 8 KiB of it: closed within 3 s or not.
  forge     clinic-2 sends a hello whose name holds a newline and a fake log line: forged lines counted.
  revoke    `revoke --client clinic-1` while it is connected: its connection closed within 3 s or not.
Prints one JSON object. It needs only Python's standard library; it wrote the "before" figures of
the commit that added the limits, run against the binary built from the commit before them.
"""
import json, os, socket, ssl, struct, subprocess, sys, tempfile, time, argparse

def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def frame(kind, payload):
    return b"CNCL" + struct.pack(">HHI", 1, kind, len(payload)) + payload

def hello(client):
    name = client.encode()
    return frame(1, struct.pack(">I", len(name)) + name + struct.pack(">I", 5) + b"probe" + struct.pack(">Q", 0)
                 + struct.pack(">I", 0))

def tls(root, client, port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(os.path.join(root, "coordinator", "ca.pem"))
    context.load_cert_chain(os.path.join(root, client + ".pem"), os.path.join(root, client, "client.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")

def closed_within(sock, seconds):
    """Seconds until the coordinator closes `sock`, or None if it is still open after `seconds`."""
    start = time.time()
    sock.settimeout(0.1)
    while time.time() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return round(time.time() - start, 2)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (OSError, ssl.SSLError):
            return round(time.time() - start, 2)
    return None

def is_open(peer):
    try:
        data = peer.recv(1, socket.MSG_DONTWAIT)
        return data != b""
    except BlockingIOError:
        try:
            return peer.send(b"\x01", socket.MSG_NOSIGNAL) == 1
        except OSError:
            return False
    except OSError:
        return False

def wait_for_log(log, text, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if os.path.exists(log) and text in open(log, errors="replace").read():
            return round(time.time() - start, 3)
        time.sleep(0.01)
    return None

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("coordinator"); parser.add_argument("client"); parser.add_argument("model")
    parser.add_argument("--peers", type=int, default=200); parser.add_argument("--addresses", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=16)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="prelogin-probe-")
    state, port = os.path.join(root, "coordinator"), free_port()
    run(args.coordinator, "init", "--state", state, "--name", "probe", "--host", "127.0.0.1", "--port", str(port))
    for client in ("clinic-1", "clinic-2"):
        run(args.client, "init", "--state", os.path.join(root, client), "--name", client)
        run(args.coordinator, "enroll", "--state", state, "--csr", os.path.join(root, client, "client.csr"),
            "--out", os.path.join(root, client + ".pem"))
    plan = {"steps": 2, "learning_rate": 0.01, "sampling_rate": 0.25, "noise_multiplier": 1.0, "clip_norm": 1.0,
            "delta": 1e-5, "max_length": 64, "rank": 2, "alpha": 4, "targets": ["q_proj", "v_proj"]}
    config = {"model": args.model, "listen": "127.0.0.1",
              "rounds": {"min_clients": 3, "max_clients": 3, "fraction": 1.0, "aggregation": "fedavg",
                         "secure_aggregation": False, "invite_timeout": 20, "round_timeout": 60,
                         "wait_for_clients": 30, "plan": plan}}
    json.dump(config, open(os.path.join(root, "coordinator.json"), "w"))
    log = os.path.join(state, "serve.log")
    server = subprocess.Popen([args.coordinator, "serve", "--state", state, "--config", os.path.join(root, "coordinator.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {"peers": args.peers, "addresses": args.addresses, "trickle_seconds": args.seconds}
    try:
        if wait_for_log(log, "listening on", 30) is None:
            raise SystemExit("the coordinator did not start: " + open(log).read() if os.path.exists(log) else "no log")
        peers = []
        for i in range(args.peers):
            peer = socket.socket(); peer.bind(("127.0.0.%d" % (2 + i % args.addresses), 0))
            try:
                peer.connect(("127.0.0.1", port)); peer.send(b"\x16\x03\x01\x02\x00"); peers.append(peer)
            except OSError:
                peer.close()
        start, logged_in, client1 = time.time(), None, None
        while time.time() - start < args.seconds:
            for peer in peers:
                try: peer.send(b"\x01", socket.MSG_NOSIGNAL)
                except OSError: pass
            if client1 is None and time.time() - start >= 2:
                before = time.time()
                client1 = tls(root, "clinic-1", port); client1.sendall(hello("clinic-1"))
                seen = wait_for_log(log, "client 'clinic-1' connected", 30)
                logged_in = round(time.time() - before, 3) if seen is not None else None
            time.sleep(0.5)
        result["enrolled_login_seconds_during_flood"] = logged_in
        result["peers_still_open_after_trickle"] = sum(1 for peer in peers if is_open(peer))
        for peer in peers: peer.close()

        client2 = tls(root, "clinic-2", port)
        client2.sendall(frame(1, b"\0" * (1 << 20))[:12 + 8192])
        result["oversized_hello_closed_after_seconds"] = closed_within(client2, 3)

        forger = tls(root, "clinic-2", port)
        forger.sendall(hello("evil\n2026-12-05T00:00:00Z round 9 committed: 5 participants"))
        closed_within(forger, 3)
        lines = open(log, errors="replace").read().split("\n")
        result["forged_log_lines"] = sum(1 for line in lines if line.startswith("2026-12-05T00:00:00Z round 9"))

        run(args.coordinator, "revoke", "--state", state, "--client", "clinic-1")
        result["revoked_connection_closed_after_seconds"] = closed_within(client1, 3)
    finally:
        server.terminate(); server.wait(timeout=20)
    print(json.dumps(result))

if __name__ == "__main__":
    main()
