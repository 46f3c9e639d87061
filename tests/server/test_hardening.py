#!/usr/bin/env python3
"""Hostile-client tests of `moeopt serve` (issue 19): each case failed before its fix.

  * deeply nested JSON (30,000 levels) in every field that reaches the template or a copy:
    400, and the process stays up;
  * wrong types on /tokenize are 400 with `param`; bytes after the JSON document are 400;
  * HTTP framing: conflicting Content-Length 400, a huge declared body 413 at the headers,
    too many / too large headers 431, a head or body that does not arrive in time 408;
  * an assistant message with tool_calls and no content renders like the template expects;
  * the bearer scheme is case-insensitive and the key is compared raw (no %-decoding);
  * 300 clients sending one byte per second do not starve /health or a real request;
  * a 15-million-element array and a 31 MB prompt are refused quickly, without the memory;
  * X-Request-Id is echoed.

Usage: test_hardening.py PATH/TO/moeopt [SOURCE_DIR]
"""
import json
import os
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402  (Server, check, the jinja2 reference)

check = ts.check
MODEL = ts.MODEL
DEEP = 30000


def raw_http(port, data, timeout=30, read_all=True):
    """Sends raw bytes, returns (status, headers dict lower-cased, body) of the first response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines or not lines[0].startswith("HTTP/1.1 "):
            return None, {}, buf
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while read_all and len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, hdrs, body
    finally:
        s.close()


def post(path, body_bytes, extra=b""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body_bytes)}\r\n").encode() + extra + b"\r\n" + body_bytes


def alive(srv):
    check(srv.proc.poll() is None, f"server died (rc {srv.proc.poll()})")
    status, _, _ = srv.request("GET", "/health")
    check(status == 200, f"/health {status}")


def error_of(status, body):
    err = json.loads(body)["error"]
    check(err.get("message") and err.get("type"), f"no OpenAI error object: {body[:200]}")
    return err


def test_deep_nesting(srv):
    deep = "[" * DEEP + "]" * DEEP
    user = '{"role":"user","content":"hi"}'
    cases = [
        ("/v1/chat/completions", '{"model":"%s","messages":[{"role":"user","content":%s}]}' % (MODEL, deep)),
        ("/v1/chat/completions", '{"messages":[%s],"tools":[{"type":"function","function":%s}]}' % (user, deep)),
        ("/v1/chat/completions", '{"messages":[%s],"chat_template_kwargs":{"x":%s}}' % (user, deep)),
        ("/v1/chat/completions", '{"messages":[{"role":"user","content":"hi","extra":%s}]}' % deep),
        ("/tokenize", '{"messages":[{"role":"user","content":%s}]}' % deep),
        ("/tokenize", '{"messages":[{"role":"user","content":"hi","x":%s}]}' % deep),
        ("/v1/completions", '{"prompt":%s}' % deep),
        ("/detokenize", '{"tokens":%s}' % deep),
    ]
    for path, body in cases:
        status, _, payload = raw_http(srv.port, post(path, body.encode()))
        check(status == 400, f"{path} with {DEEP} nested arrays: status {status}")
        err = error_of(status, payload)
        check("deeper than 128" in err["message"], f"{path}: {err['message']}")
        alive(srv)
    # 128 levels is still a valid body (and is no crash either).
    ok = "[" * 120 + "]" * 120
    status, _, payload = raw_http(srv.port, post("/v1/chat/completions",
                                                 ('{"messages":[{"role":"user","content":"hi","x":%s}],'
                                                  '"max_tokens":1}' % ok).encode()))
    check(status == 200, f"120 levels: {status} {payload[:200]}")


def test_types_and_trailing_bytes(srv):
    status, _, body = raw_http(srv.port, post("/tokenize", b'{"messages":[{"role":"user","content":"hi"}],'
                                                           b'"add_generation_prompt":"yes"}'))
    check(status == 400 and error_of(status, body)["param"] == "add_generation_prompt", f"agp 'yes': {status} {body}")
    status, _, body = raw_http(srv.port, post("/tokenize", b'{"prompt":"hi","add_special_tokens":1}'))
    check(status == 400 and error_of(status, body)["param"] == "add_special_tokens", f"ast 1: {status} {body}")
    for tail in (b"\x00 garbage", b" garbage", b"{}"):
        status, _, body = raw_http(srv.port, post("/v1/completions", b'{"prompt":"hi","max_tokens":1}' + tail))
        check(status == 400, f"trailing {tail!r}: {status} {body[:200]}")
        error_of(status, body)


def test_http_framing(srv):
    body = b'{"prompt":"hi","max_tokens":1}'
    # Two different Content-Length values (RFC 9112 6.3).
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 5\r\n\r\n"
           % len(body)) + body
    status, _, payload = raw_http(srv.port, req)
    check(status == 400 and "Content-Length" in error_of(status, payload)["message"], f"two lengths: {status}")
    # Same value twice is fine.
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n"
           % (len(body), len(body))) + body
    check(raw_http(srv.port, req)[0] == 200, "two equal Content-Length values")
    # A huge declared body: 413 at once, without reading it.
    t0 = time.time()
    req = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000000\r\n\r\n{\"pro"
    status, _, payload = raw_http(srv.port, req)
    took = time.time() - t0
    check(status == 413 and took < 2, f"huge Content-Length: {status} after {took:.1f} s")
    error_of(status, payload)
    # Too many headers / too large a head.
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(200))
    status, _, payload = raw_http(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    check(status == 431, f"200 headers: {status}")
    error_of(status, payload)
    status, _, _ = raw_http(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    check(status == 431, f"70 KB header: {status}")
    # 50,000 headers of 1 KB never get buffered: the connection is answered 431 early.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    answered = False
    try:
        for i in range(50000):
            s.sendall(b"X-A%d: %s\r\n" % (i, b"b" * 1000))
    except (BrokenPipeError, ConnectionResetError):
        answered = True
    try:
        got = s.recv(200)
        answered = answered or got.startswith(b"HTTP/1.1 431")
    except OSError:
        pass
    s.close()
    check(answered, "50,000 headers were not refused")
    # Chunked request bodies, bad request lines, missing Host.
    check(raw_http(srv.port, b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0]
          == 411, "chunked request body")
    check(raw_http(srv.port, b"GARBAGE\r\n\r\n")[0] == 400, "bad request line")
    check(raw_http(srv.port, b"GET /health HTTP/1.1\r\n\r\n")[0] == 400, "missing Host")
    check(raw_http(srv.port, b"GET /health HTTP/1.0\r\n\r\n")[0] == 200, "HTTP/1.0 without Host")
    # Keep-alive with two pipelined requests on one connection.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    check(data.count(b"HTTP/1.1 200 OK") == 2, f"pipelined keep-alive: {data[:300]!r}")
    alive(srv)


def test_tool_call_history(srv):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    for variant in (messages, [messages[0], dict(messages[1], content=None), messages[2]]):
        status, body, _ = srv.request("POST", "/tokenize", {"messages": variant})
        check(status == 200, f"tool-call history: {status} {body[:300]}")
        ref = [dict(m) for m in variant]
        for m in ref:
            if m.get("content") is None:
                m["content"] = ""
        want = len(ts.hf_tokenizer().encode(ts.qwen3_chat_prompt(ref), add_special_tokens=False).ids)
        check(json.loads(body)["count"] == want, f"tool-call history tokens {json.loads(body)['count']} != {want}")
    status, body, _ = srv.request("POST", "/v1/chat/completions",
                                  {"model": MODEL, "messages": messages, "max_tokens": 2})
    check(status == 200, f"chat with tool-call history: {status} {body[:300]}")


def test_auth_raw_header():
    srv = ts.Server("--api-key", "sek%72et")
    try:
        body = b'{"prompt":"hi","max_tokens":1}'
        for auth, want in [(b"Bearer sek%72et", 200), (b"bearer sek%72et", 200), (b"BEARER  sek%72et", 200),
                           (b"Bearer sekret", 401), (b"Bearer sek%72et%00x", 401), (b"Bearer sek%72etX", 401),
                           (b"Basic sek%72et", 401), (b"Bearersek%72et", 401)]:
            status, _, payload = raw_http(srv.port, post("/v1/completions", body, b"Authorization: " + auth + b"\r\n"))
            check(status == want, f"Authorization {auth!r}: {status}, want {want}")
            if want == 401:
                check(error_of(status, payload)["type"] == "authentication_error", payload)
    finally:
        srv.stop()


def test_slow_clients():
    """300 clients that trickle one byte per second; /health and a real request still answer."""
    srv = ts.Server("--max-num-seqs", "4", "--max-waiting-requests", "4", "--header-timeout", "6")
    socks = []
    stop = threading.Event()
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            s.sendall(b"P")
            socks.append(s)

        def trickle():
            msg = b"OST /v1/completions HTTP/1.1\r\nHost: x\r\n"
            for i in range(len(msg)):
                if stop.is_set():
                    return
                for s in socks:
                    try:
                        s.send(msg[i:i + 1])
                    except OSError:
                        pass
                time.sleep(1)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(2)
        worst = 0.0
        for _ in range(10):
            t0 = time.time()
            status, _, _ = srv.request("GET", "/health")
            worst = max(worst, time.time() - t0)
            check(status == 200, f"/health under slow clients: {status}")
            time.sleep(0.1)
        t0 = time.time()
        status, body, _ = srv.request("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2})
        took = time.time() - t0
        check(status == 200, f"completion under slow clients: {status} {body[:200]}")
        print(f"    300 slow clients: /health worst {worst * 1000:.1f} ms, a completion {took * 1000:.0f} ms")
        check(worst < 1.0, f"/health took {worst:.2f} s")
        # The trickling heads hit their deadline: 408 and closed.
        time.sleep(6)
        timed_out = 0
        for s in socks:
            try:
                s.settimeout(5)
                if s.recv(64).startswith(b"HTTP/1.1 408"):
                    timed_out += 1
            except OSError:
                pass
        check(timed_out >= 290, f"only {timed_out} of 300 slow clients got 408")
    finally:
        stop.set()
        for s in socks:
            s.close()
        srv.stop()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_memory_bounds(srv):
    before = rss_kib(srv.proc.pid)
    big = b'{"prompt":[' + b",".join([b"1"] * 15_000_000) + b"]}"
    t0 = time.time()
    status, _, payload = raw_http(srv.port, post("/v1/completions", big), timeout=120)
    took = time.time() - t0
    grown = (rss_kib(srv.proc.pid) - before) / 1024
    check(status == 400 and "values" in error_of(status, payload)["message"], f"15M-element array: {status}")
    print(f"    15M-element array: 400 in {took:.2f} s, RSS +{grown:.0f} MiB")
    check(grown < 300, f"RSS grew {grown:.0f} MiB for a refused array")
    text = ("hello world " * 2_600_000)[:31_000_000]
    t0 = time.time()
    status, _, payload = raw_http(srv.port, post("/v1/completions", json.dumps({"prompt": text}).encode()), timeout=120)
    took = time.time() - t0
    check(status == 400 and error_of(status, payload)["param"] == "prompt", f"31 MB prompt: {status}")
    print(f"    31 MB prompt: 400 in {took:.2f} s")
    check(took < 3, f"31 MB prompt took {took:.1f} s")
    alive(srv)


def test_request_id(srv):
    _, _, hdrs = srv.request("GET", "/health", headers={"X-Request-Id": "abc-123"})
    check(hdrs.get("X-Request-Id") == "abc-123", f"X-Request-Id not echoed: {hdrs}")
    _, _, hdrs = srv.request("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})
    check(hdrs.get("X-Request-Id", "").startswith("req-"), f"no generated X-Request-Id: {hdrs}")
    _, _, hdrs = srv.request("GET", "/health", headers={"X-Request-Id": "bad id\twith spaces"})
    check(hdrs.get("X-Request-Id", "").startswith("req-"), f"unsafe X-Request-Id echoed: {hdrs}")


def main():
    t_start = time.time()
    ok = True
    srv = ts.Server()
    try:
        for t in (test_deep_nesting, test_types_and_trailing_bytes, test_http_framing, test_tool_call_history,
                  test_request_id, test_memory_bounds):
            t0 = time.time()
            try:
                t(srv)
                print(f"PASS {t.__name__} ({time.time() - t0:.1f} s)")
            except Exception:  # noqa: BLE001
                ok = False
                print(f"FAIL {t.__name__}\n{traceback.format_exc()}")
    finally:
        srv.stop()
    for t in (test_auth_raw_header, test_slow_clients):
        t0 = time.time()
        try:
            t()
            print(f"PASS {t.__name__} ({time.time() - t0:.1f} s)")
        except Exception:  # noqa: BLE001
            ok = False
            print(f"FAIL {t.__name__}\n{traceback.format_exc()}")
    print(f"{'OK' if ok else 'FAILED'} in {time.time() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
