"""The one error type the emulator's handlers raise; the server turns it into Qdrant's error body."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error answered the way Qdrant answers it.

    `plain` errors are sent as text/plain (snapshot downloads, the auth middleware);
    the others as `{"status": {"error": message}, "time": ...}`.
    """

    def __init__(self, status: int, message: str, *, plain: bool = False, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.plain = plain
        self.headers = dict(headers or {})


def collection_not_found(name: str) -> ApiError:
    return ApiError(404, f"Not found: Collection `{name}` doesn't exist!")


def bad_input(message: str) -> ApiError:
    return ApiError(400, f"Wrong input: {message}")


def bad_request(message: str) -> ApiError:
    return ApiError(400, f"Bad request: {message}")


def validation_error(where: str, message: str) -> ApiError:
    return ApiError(422, f"Validation error in {where}: [{message}]")


def forbidden(message: str) -> ApiError:
    return ApiError(403, f"Forbidden: {message}")
