"""S3 server-side encryption as stored, not as asked for.

qbr asks for the declared SSE on every object it writes (qbr.repository.protection), but an
object written behind its back, before `sse` was declared, or by a tool that dropped the
headers is stored however the bucket's default says. verify asks S3 (HeadObject) how each object
it checks is held: set records, archives (in a dedup repository: their chunk lists and every
chunk they name, where the bytes are), the repository's lock and the state and its lock when
they are there. One without the declared mode (or KMS key) is a problem, a sentence naming it.

KMS keys: S3 reports the key an object was encrypted with as an ARN. A declared key id or ARN
is compared with it; a declared alias only when S3 reports the alias too (AWS reports the key's
ARN, which an alias cannot be matched with without KMS): otherwise a warning says so, once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qbr.errors import QbrError


def stored_sse(repo: Any, key: str) -> tuple[str | None, str | None] | None:
    """(mode, KMS key id) that S3 reports for `key` of the S3 repository `repo`; None if absent."""
    import botocore.exceptions

    try:
        head = repo._client.head_object(Bucket=repo.bucket, Key=repo.full_key(key))
    except botocore.exceptions.ClientError as error:
        if int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0) == 404:
            return None
        raise repo._error(error, "lookup of server-side encryption", key) from None
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


def chunk_keys(repo: Any, archive_keys: list[str]) -> list[str]:
    """The keys of the chunks the chunk lists at `archive_keys` name (none for a whole-archive
    repository, or an archive stored whole): one GET per list."""
    read_list = getattr(repo, "read_list", None)
    if read_list is None:
        return []
    from qbr.repository.chunks import chunk_key

    named: set[str] = set()
    for key in archive_keys:
        try:
            listing = read_list(key)
        except QbrError:
            continue  # verify reports an unreadable archive on its own
        if listing is not None:
            named |= {chunk_key(chunk_id) for chunk_id in listing.ids()}
    return sorted(named)


def _key_tail(text: str) -> str:
    """`key/<id>` or `alias/<name>` of a KMS key id, alias, or ARN of either."""
    tail = text.split(":", 5)[5] if text.startswith("arn:") and text.count(":") >= 5 else text
    return tail if tail.startswith(("key/", "alias/")) else f"key/{tail}"


def judge(full: str, found: tuple[str | None, str | None], declared: Any) -> tuple[str | None, bool]:
    """(the problem with how `full` is stored, or None; whether its KMS key could not be compared)."""
    mode, key_id = found
    wanted = declared.mode + (f" with key {declared.kms_key_id}" if declared.kms_key_id else "")
    fix = f"aws s3 cp {full} {full} --sse {declared.mode}" + (f" --sse-kms-key-id {declared.kms_key_id}" if declared.kms_key_id else "")
    if mode != declared.mode:
        got = f"with SSE {mode}" if mode else "without SSE"
        return f"{full} is stored {got} where the manifest declares {wanted}; rewrite it with that SSE ({fix})", False
    if declared.mode != "aws:kms" or not declared.kms_key_id or not key_id:
        return None, False
    want, have = _key_tail(declared.kms_key_id), _key_tail(key_id)
    if want == have:
        return None, False
    if want.startswith("alias/") and not have.startswith("alias/"):
        return None, True
    return f"{full} is encrypted with KMS key {key_id} where the manifest declares {declared.kms_key_id}; rewrite it with that key ({fix})", False


def sse_findings(repo: Any, keys: list[str], declared: Any, where: str, parallelism: int) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the objects `keys` of `repo` against the `declared` SSE; absent
    objects are skipped (verify reports missing archives on its own)."""

    def one(key: str) -> tuple[str | None, bool, str | None]:
        full = f"s3://{repo.bucket}/{repo.full_key(key)}"
        try:
            found = stored_sse(repo, key)
        except QbrError as error:
            return None, False, f"{where}: cannot ask S3 how {full} is stored: {error}"
        if found is None:
            return None, False, None
        problem, unknown = judge(full, found, declared)
        return (f"{where}: {problem}" if problem else None), unknown, None

    if not keys:
        return [], []
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(keys))), thread_name_prefix="qbr-verify-sse") as pool:
        results = list(pool.map(one, keys))
    problems = [problem for problem, _, _ in results if problem]
    warnings = [warning for _, _, warning in results if warning]
    if any(unknown for _, unknown, _ in results):
        warnings.append(f"{where}: S3 reports KMS key ARNs, so objects were not checked against the alias "
                        f"{declared.kms_key_id}; declare the key's id or ARN to have it checked")
    return problems, warnings
