"""The HTTP side of a node: a threaded server with its own accept loop (so it stops at once),
request bodies, fault injection (before or after the work), request accounting, and responses
with Content-Length or chunked framing."""

from __future__ import annotations

import socket
import struct
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from tests.emulator import api
from tests.emulator.accounting import Traffic
from tests.emulator.errors import ApiError
from tests.emulator.faults import Fault
from tests.emulator.httpio import CountingReader, drain, open_body
from tests.emulator.throttle import capped

if TYPE_CHECKING:
    from tests.emulator.cluster import EmulatorNode

DRAIN_LIMIT = 16 * 1024 * 1024
FAULT_MESSAGES = {
    400: "Bad request: injected fault",
    401: "Invalid API key or JWT",
    403: "Forbidden: injected fault",
    404: "Not found: injected fault",
    408: "Timeout error: injected fault",
    409: "Wrong input: injected fault",
    429: "Too many requests: injected fault",
    500: "Service internal error: injected fault",
    503: "Service unavailable: injected fault",
}


class NodeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, node: EmulatorNode, address: tuple[str, int]):
        self.node = node
        self.halted = threading.Event()  # set when the node goes down: ends held ("hang") answers
        super().__init__(address, Handler)

    def accept_loop(self) -> None:
        while True:
            try:
                conn, addr = self.socket.accept()
            except OSError:
                return
            try:
                self.process_request(conn, addr)
            except Exception:
                conn.close()

    def halt(self) -> None:
        """Stop listening now: connecting afterwards is refused."""
        self.halted.set()
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "qdrant-emulator"
    sys_version = ""
    server: NodeHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.node.track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.node.track_connection(self.connection, False)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            pass  # the client (or node.down()) closed the connection

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self.serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    # -------------------------------------------------------------------------------------
    def serve(self) -> None:
        node = self.server.node
        started = time.monotonic()
        split = urlsplit(self.path)
        path = split.path or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        matched, _ = api.match(self.command, path)
        record = node.record_request(self.command, path, query, Traffic(
            self.command, path, dict(query), matched.template if matched else None, matched.kind if matched else None))
        try:
            body = CountingReader(open_body(self.rfile, self.headers))
        except ApiError as err:
            self.close_connection = True
            self.send(api.error_response(err, started), None, record)
            return
        fault = node.faults.take(self.command, path)
        if fault is not None:
            record.fault = (f"after_work:{fault.after_work}" if fault.after_work else "reset" if fault.reset
                            else "status" if fault.status is not None else "latency" if fault.latency
                            else "cut" if fault.cut_after is not None else "corrupt" if fault.corrupt else "none")
        try:
            if fault is not None and fault.latency:
                time.sleep(fault.latency)
            if fault is not None and fault.reset:
                self.reset()
                return
            if fault is not None and fault.status is not None:
                response = self.fault_response(fault, started)
            else:
                response = api.dispatch(node, self.command, path, query, self.headers, body, started)
        except ApiError as err:
            response = api.error_response(err, started)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception as err:  # a bug in the emulator: answer 500 and keep it for the tests
            node.errors.append(traceback.format_exc())
            response = api.error_response(ApiError(500, f"Service internal error: {err}"), started)
        finally:
            record.received = body.count
        try:
            if not body.finished and not drain(body, DRAIN_LIMIT):
                self.close_connection = True
        except (ConnectionError, ApiError):
            self.close_connection = True
        record.received = body.count
        if fault is not None and fault.after_work == "reset":
            response.close()
            self.reset()
            record.done = True
            return
        if fault is not None and fault.after_work == "hang":
            self.server.halted.wait(fault.hold)
        self.send(response, fault, record)

    def fault_response(self, fault: Fault, started: float) -> api.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.body is None:
            message = FAULT_MESSAGES.get(fault.status, f"Injected fault: HTTP {fault.status}")
            return api.error_response(ApiError(fault.status, message, headers=headers), started)
        if isinstance(fault.body, (dict, list)):
            return api.json_response(fault.status, fault.body, headers)
        data = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
        return api.Response(fault.status, data, len(data), "text/plain; charset=utf-8", headers)

    def reset(self) -> None:
        """Close with RST and no response at all."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, response: api.Response, fault: Fault | None, record: Traffic | None = None) -> None:
        chunked = response.length is None
        self.send_response(response.status)
        if record is not None:
            record.status = response.status
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(response.length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            response.close()
            return
        cut_after = fault.cut_after if fault is not None else None
        if fault is not None and fault.after_work == "cut":
            cut_after = 0
        corrupt_at = None
        if fault is not None and fault.corrupt:
            corrupt_at = (response.length // 2) if response.length else 0
        sent = 0
        chunks = response.chunks()
        if record is not None and record.kind == "download" and response.status == 200:
            chunks = capped(self.server.node, chunks)  # node.download_rate, if set (throttle.py)
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if corrupt_at is not None and sent <= corrupt_at < sent + len(chunk):
                    mutable = bytearray(chunk)
                    mutable[corrupt_at - sent] ^= 0xFF
                    chunk = bytes(mutable)
                if cut_after is not None and sent + len(chunk) > cut_after:
                    self.write(chunk[: max(0, cut_after - sent)], chunked)
                    if record is not None:
                        record.sent = max(0, cut_after)
                    self.cut()
                    return
                self.write(chunk, chunked)
                sent += len(chunk)
                if record is not None:
                    record.sent = sent
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            if cut_after == 0:
                self.cut()  # an answer with an empty body, cut after its headers
        finally:
            if record is not None:
                record.done = True
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            response.close()

    def write(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(b"%x\r\n" % len(data))
            self.wfile.write(data)
            self.wfile.write(b"\r\n")
        else:
            self.wfile.write(data)


def serve_in_thread(server: NodeHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.accept_loop, name=name, daemon=True)
    thread.start()
    return thread
