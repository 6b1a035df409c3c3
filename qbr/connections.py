"""Open Qdrant clients and repositories from the manifest, once each, under one request bound.

Every Qdrant request of a run passes through one semaphore, so `--parallelism N` bounds the
requests in flight whatever mix of clusters, nodes and collections is being read.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import httpx

from qbr.errors import QbrError
from qbr.manifest import ClusterConfig, Manifest, RepositoryConfig
from qbr.qdrant import NodeRef, QdrantClient, rest_urls_from_cluster
from qbr.repository import open_s3_repository
from qbr.repository.base import Repository
from qbr.repository.server_side import ServerSideCopier


class _BoundedTransport(httpx.BaseTransport):
    """Holds a slot of the run's semaphore while a request is sent and its headers read."""

    def __init__(self, inner: httpx.BaseTransport, slots: threading.BoundedSemaphore) -> None:
        self.inner = inner
        self.slots = slots

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.slots:
            return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Connections:
    """The run's open clients and repositories, keyed by cluster/node and repository name."""

    def __init__(self, manifest: Manifest, parallelism: int = 8) -> None:
        if parallelism < 1:
            raise QbrError("--parallelism must be at least 1")
        self.manifest = manifest
        self.parallelism = parallelism
        self._slots = threading.BoundedSemaphore(parallelism)
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], QdrantClient] = {}
        self._nodes: dict[str, list[NodeRef]] = {}
        self._distributed: dict[str, bool] = {}
        self._repositories: dict[str, Repository] = {}
        self._copiers: dict[tuple[str | None, str | None], ServerSideCopier] = {}
        # Tuning knobs for slow links and for tests (retry backoff in seconds).
        self._backoff = _env_float("QBR_HTTP_BACKOFF", 0.5)
        self._retries = int(_env_float("QBR_HTTP_RETRIES", 4))

    def client(self, cluster: str, url: str) -> QdrantClient:
        key = (cluster, url.rstrip("/"))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                config = self.manifest.clusters[cluster]
                timeout = config.timeout.total_seconds() if config.timeout else 30.0
                long_timeout = config.snapshot_timeout.total_seconds() if config.snapshot_timeout else 3600.0
                client = QdrantClient(
                    key[1],
                    api_key=config.api_key,
                    cluster=cluster,
                    timeout=timeout,
                    snapshot_timeout=long_timeout,
                    retries=self._retries,
                    backoff=self._backoff,
                    transport=_BoundedTransport(_http_transport(config), self._slots),
                )
                self._clients[key] = client
            return client

    def seed(self, cluster: str) -> QdrantClient:
        return self.client(cluster, self.manifest.clusters[cluster].urls[0])

    def cluster_nodes(self, cluster: str) -> list[NodeRef]:
        """The cluster's nodes' REST URLs: listed in the manifest, or discovered from GET /cluster."""
        if cluster in self._nodes:
            return self._nodes[cluster]
        config = self.manifest.clusters[cluster]
        status = self.seed(cluster).cluster_status()
        self._distributed[cluster] = status.get("status") == "enabled"
        if config.discover:
            # From the status already read: Client.nodes() would ask GET /cluster a second time.
            nodes = rest_urls_from_cluster(status, self.seed(cluster).url, config.rest_port)
        else:
            nodes = []
            for url in config.urls:
                peer = self.client(cluster, url).cluster_status().get("peer_id")
                nodes.append(NodeRef(None if peer is None else int(peer), url.rstrip("/")))
        self._nodes[cluster] = nodes
        return nodes

    def is_distributed(self, cluster: str) -> bool:
        self.cluster_nodes(cluster)
        return self._distributed.get(cluster, False)

    def repository(self, name: str) -> Repository:
        with self._lock:
            repo = self._repositories.get(name)
            if repo is None:
                repo = open_repository(self.manifest.repositories[name])
                if self.manifest.repositories[name].dedup:  # archives chunked, stored once by hash
                    from qbr.repository.chunked import ChunkedRepository

                    config = self.manifest.repositories[name]
                    sealing = None
                    if config.encryption is not None:  # keyed chunk ids, chunks encrypted after compression
                        from qbr.repository.chunk_crypto import ChunkSealing

                        sealing = ChunkSealing(name, config.encryption.recipients, config.encryption.fingerprint)
                    repo = ChunkedRepository(repo, compression=config.compression, level=config.compression_level, sealing=sealing)
                self._repositories[name] = repo
            return repo

    def copier(self, cluster: str) -> ServerSideCopier:
        """S3 copies for a cluster whose nodes write snapshots to S3 (on that store's endpoint)."""
        store = self.manifest.clusters[cluster].snapshot_storage
        assert store is not None
        return self.copier_for(store.endpoint_url, store.region)

    def copier_for(self, endpoint_url: str | None, region: str | None) -> ServerSideCopier:
        with self._lock:
            copier = self._copiers.get((endpoint_url, region))
            if copier is None:
                copier = self._copiers[(endpoint_url, region)] = ServerSideCopier(endpoint_url, region)
            return copier

    def s3_requests(self) -> dict[str, dict[str, int]]:
        """S3 requests sent so far by kind and bytes moved, per repository opened (S3 ones only):
        what a run cost, for an operator pricing a schedule."""
        with self._lock:
            opened = dict(self._repositories)
        return {name: dict(counts) for name, repo in sorted(opened.items())
                if isinstance(counts := getattr(repo, "requests", None), dict)}

    def can_presign(self, name: str) -> bool:
        config = self.manifest.repositories[name]
        return config.kind == "s3" and not config.dedup  # a chunked archive is rebuilt by qbr, uploaded

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> "Connections":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_repository(config: RepositoryConfig) -> Repository:
    """A repository from its manifest entry (S3 credentials come from the AWS chain only)."""
    from qbr.repository.protection import open_folder, protect

    if config.kind == "s3":
        return protect(open_s3_repository(
            config.bucket or "", prefix=config.prefix, endpoint_url=config.endpoint_url, region=config.region,
            name=config.name, **config.s3.client_settings(),
        ), config)
    assert config.path is not None
    return open_folder(config)


def _http_transport(config: ClusterConfig) -> httpx.HTTPTransport:
    """The TLS a cluster's manifest entry asks for: a private CA, a client certificate, or none."""
    tls = config.tls
    if not tls.verify:
        return httpx.HTTPTransport(verify=False)
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_bundle) if tls.ca_bundle else None)
        if tls.client_cert is not None:
            context.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
        return httpx.HTTPTransport(verify=context)
    except (OSError, ssl.SSLError) as error:
        raise QbrError(
            f"cannot load the TLS files of cluster {config.name} (tls.ca_bundle, tls.client_cert, tls.client_key): {error}"
        ) from None
