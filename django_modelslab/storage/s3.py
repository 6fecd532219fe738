"""Content-addressed S3: django-storages' ``S3Storage`` that decides its keys and never overwrites.

Importing this module imports boto3 and django-storages; ``django_modelslab.storage`` names
:class:`ContentAddressedS3Storage` too, importing this module on first access only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore import auth
from botocore.exceptions import ClientError
from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from ..conf import get_setting
from .base import (
    CHUNK,
    ContentAddressedStorageMixin,
    Deleted,
    StoredFile,
    WantedCheck,
    hash_chunks,
    refresh_age,
)
from .content import VerifiedImage

#: Headers a copy in place (a refresh) keeps from the object.
_KEPT_HEADERS = (
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
)

#: Multipart settings for S3 uploads: images up to 64 MB go in one PUT streamed straight
#: from the spooled file; larger ones go up in 5 MiB parts, one at a time, one read ahead
#: (boto3 copies each part into memory: ~13 MB at most, measured).
S3_TRANSFER: dict[str, Any] = {
    "multipart_threshold": 64 * 1024 * 1024,
    "multipart_chunksize": 5 * 1024 * 1024,
    "max_concurrency": 1,
    "max_in_memory_upload_chunks": 1,
}


def s3_transfer_config(**overrides: Any) -> TransferConfig:
    """The bounded-memory ``TransferConfig`` S3 uploads use unless ``transfer_config`` is set
    (``overrides`` replace :data:`S3_TRANSFER` entries)."""
    options = {**S3_TRANSFER, **overrides}
    in_memory = options.pop("max_in_memory_upload_chunks")
    config = TransferConfig(**options)
    config.max_in_memory_upload_chunks = in_memory  # not a boto3 argument, but honoured
    return config


def _if_none_match(params: dict[str, Any], **kwargs: Any) -> None:
    params.setdefault("IfNoneMatch", "*")


# Presigned URLs that stay the same within a URL_SIGNING_WINDOW: while url() signs, this
# thread's window start is set, and a botocore "choose-signer" hook picks a signer that
# signs as of it (SigV4, or SigV2 when the client has ``signature_version="s3"``).
_window = threading.local()


class _WindowedSigV4(auth.S3SigV4QueryAuth):
    def _modify_request_before_signing(self, request: Any) -> None:
        # everything after this reads the signing time from the request context
        request.context["timestamp"] = time.strftime(
            auth.SIGV4_TIMESTAMP, time.gmtime(_window.start)
        )
        super()._modify_request_before_signing(request)


class _WindowedSigV2(auth.HmacV1QueryAuth):
    def _get_date(self) -> str:  # SigV2's Expires: an absolute time
        return str(_window.start + int(self._expires))


auth.AUTH_TYPE_MAPS["modelslab-window-s3v4-query"] = _WindowedSigV4
auth.AUTH_TYPE_MAPS["modelslab-window-s3-query"] = _WindowedSigV2
#: botocore's presigning signers -> ours ("v4" is what botocore turns into S3's "s3v4").
_WINDOWED_SIGNERS = {
    "s3-query": "modelslab-window-s3-query",
    "s3v4-query": "modelslab-window-s3v4-query",
    "v4-query": "modelslab-window-s3v4-query",
}


def _choose_signer(signature_version: Any, **kwargs: Any) -> str | None:
    if getattr(_window, "start", None) is None:
        return None  # a request being sent, or a URL signed as of now: botocore's own
    return _WINDOWED_SIGNERS.get(signature_version)  # None (S3 Express...): as usual


class ContentAddressedS3Storage(ContentAddressedStorageMixin, S3Storage):
    """django-storages' ``S3Storage``, content-addressed: keys are final, never overwritten.

    Options are ``S3Storage``'s (``bucket_name``, ``endpoint_url``, ``custom_domain``,
    ``querystring_auth``, ``default_acl``, ``location``, ``object_parameters`` …) plus
    ``conditional_writes`` (default True): write with ``If-None-Match: *`` so two
    workers storing the same key at once leave one object; turn it off for an S3
    clone that rejects the header. Every object gets the decoded format's
    ``ContentType``, ``MODELSLAB["CACHE_CONTROL"]`` (unless ``object_parameters`` sets
    ``CacheControl``) and the metadata :func:`~.content.store_file` passes (``sha256`` …).

    Presigned URLs (``url(name)``, no ``expire``) are signed as of the start of the
    current ``MODELSLAB["URL_SIGNING_WINDOW"]``-second window and valid
    ``querystring_expire`` seconds past its end: within a window every call (in any
    process) gives the same URL, so browsers and CDNs can cache the image.
    """

    def get_default_settings(self) -> dict[str, Any]:
        defaults: dict[str, Any] = super().get_default_settings()
        defaults["conditional_writes"] = True
        if defaults["transfer_config"] is None:
            defaults["transfer_config"] = s3_transfer_config()
        return defaults

    def _create_session(self) -> Any:
        session = super()._create_session()
        session.events.register("choose-signer.s3.GetObject", _choose_signer)
        if self.conditional_writes:
            for operation in ("PutObject", "CompleteMultipartUpload"):
                session.events.register(f"before-parameter-build.s3.{operation}", _if_none_match)
        return session

    def url(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        expire: int | None = None,
        http_method: str | None = None,
    ) -> str:
        """A presigned URL that stays the same within a ``URL_SIGNING_WINDOW``.

        An explicit ``expire`` (input images sent to ModelsLab) signs as of now, as
        django-storages does; so does a window of 0. Unsigned and ``custom_domain`` URLs
        are django-storages' own.
        """
        window = int(get_setting("URL_SIGNING_WINDOW"))
        url: str
        if expire is not None or not window or not self.querystring_auth or self.custom_domain:
            url = super().url(name, parameters, expire, http_method)
            return url
        _window.start = int(time.time()) // window * window
        try:
            url = super().url(name, parameters, self.querystring_expire + window, http_method)
            return url
        finally:
            _window.start = None

    def get_object_parameters(self, name: str) -> dict[str, Any]:
        params: dict[str, Any] = super().get_object_parameters(name)
        cache_control = get_setting("CACHE_CONTROL")
        if cache_control:
            params.setdefault("CacheControl", cache_control)
        return params

    def _get_write_parameters(self, name: str, content: Any = None) -> dict[str, Any]:
        params: dict[str, Any] = super()._get_write_parameters(name, content)
        if isinstance(content, VerifiedImage):
            params["ContentType"] = content.content_type
            params["Metadata"] = {**params.get("Metadata", {}), **content.metadata}
        return params

    def put_if_absent(self, name: str, content: File[bytes]) -> bool:
        """HEAD, then a conditional PUT; losing a race to the same key is not an error."""
        try:
            return super().put_if_absent(name, content)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412"):
                return False  # another writer stored these bytes first
            if code in ("ConditionalRequestConflict", "409") and self.exists(name):
                return False
            raise

    def refresh(self, name: str) -> bool:
        """HEAD ``name``; when it is there and older than :func:`~.base.refresh_age`,
        copy it onto itself (new ``LastModified``, same bytes, headers, metadata and ACL)
        so that a prune running now keeps it. An object deleted meanwhile counts as absent:
        the caller uploads it again."""
        key = self._normalize_name(clean_name(name))
        client = self.connection.meta.client
        try:
            head = client.head_object(Bucket=self.bucket_name, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        if time.time() - head["LastModified"].timestamp() < refresh_age():
            return True
        params: dict[str, Any] = self.get_object_parameters(name)
        params.update({header: head[header] for header in _KEPT_HEADERS if head.get(header)})
        params["Metadata"] = head.get("Metadata", {})
        if "ACL" not in params and self.default_acl:
            params["ACL"] = self.default_acl
        try:
            client.copy_object(
                Bucket=self.bucket_name,
                Key=key,
                CopySource={"Bucket": self.bucket_name, "Key": key},
                MetadataDirective="REPLACE",
                **params,
            )
        except ClientError as exc:
            if _status(exc) == 404 or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return False  # pruned between the HEAD and the copy: store it again
            raise
        return True

    def _name_of(self, key: str) -> str:
        location = self.location.strip("/")
        return key[len(location) + 1 :] if location and key.startswith(f"{location}/") else key

    def iter_stored(self, prefix: str) -> Iterator[StoredFile]:
        """Every object under ``prefix``: ``list_objects_v2``, a page (1000 keys) at a time."""
        key_prefix = self._normalize_name(clean_name(prefix))
        paginator = self.connection.meta.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=key_prefix):
            for entry in page.get("Contents", ()):
                yield StoredFile(
                    self._name_of(entry["Key"]), entry["Size"], entry["LastModified"].timestamp()
                )

    def _delete_batch(
        self, names: list[str], before: float, still_wanted: WantedCheck, result: Deleted
    ) -> None:
        """One batch of :meth:`delete_stale`.

        In batches of up to 1000: each object is HEADed again (a store reusing it since the
        listing refreshed its ``LastModified``: kept), then the references are checked, then
        one ``delete_objects``; S3's per-key errors are reported in ``errors``.
        """
        client = self.connection.meta.client
        stale: dict[str, StoredFile] = {}
        for name in names:
            key = self._normalize_name(clean_name(name))
            try:
                head = client.head_object(Bucket=self.bucket_name, Key=key)
            except ClientError as exc:
                if _status(exc) == 404:
                    result.gone.append(name)
                else:
                    result.errors[name] = str(exc)
                continue
            modified = head["LastModified"].timestamp()
            if modified >= before:
                result.kept.append(name)
                continue
            stale[name] = StoredFile(name, head["ContentLength"], modified)
        if not stale:
            return
        wanted = set(still_wanted(list(stale)))
        result.kept.extend(name for name in stale if name in wanted)
        keys = {
            self._normalize_name(clean_name(name)): name for name in stale if name not in wanted
        }
        if not keys:
            return
        try:
            response = client.delete_objects(
                Bucket=self.bucket_name,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        except ClientError as exc:
            result.errors.update({name: str(exc) for name in keys.values()})
            return
        failed = {}
        for error in response.get("Errors", ()):
            name = keys.get(error.get("Key", ""), error.get("Key", ""))
            failed[name] = f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
        result.errors.update(failed)
        result.deleted.extend(stale[name] for name in keys.values() if name not in failed)

    def digest(self, name: str) -> tuple[str, int]:
        """Stream the object's body through SHA-256 (never the whole object in memory)."""
        key = self._normalize_name(clean_name(name))
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(f"No object {key!r} in {self.bucket_name}") from exc
            raise
        body = response["Body"]
        try:
            return hash_chunks(body.iter_chunks(CHUNK))
        finally:
            body.close()


def _status(exc: ClientError) -> int | None:
    status: int | None = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status
