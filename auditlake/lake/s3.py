"""S3 specifics through boto3, configured from the same settings as the Delta tables."""
from __future__ import annotations

from .store import Lake
from ..errors import AuditlakeError


def client(lake: Lake):
    import boto3
    from botocore.config import Config

    o = lake.storage_options
    return boto3.client(
        "s3",
        endpoint_url=o.get("AWS_ENDPOINT_URL"),
        region_name=o.get("AWS_REGION"),
        aws_access_key_id=o.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=o.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=o.get("AWS_SESSION_TOKEN"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def key(lake: Lake, rel: str) -> str:
    return f"{lake.prefix}/{rel}".lstrip("/")


def put_if_absent(lake: Lake, rel: str, body: bytes) -> bool:
    """Create the object only if no object has that key. True if this call created it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client(lake).put_object(Bucket=lake.bucket, Key=key(lake, rel), Body=body, IfNoneMatch="*")
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise AuditlakeError(f"S3 error writing s3://{lake.bucket}/{key(lake, rel)}: {exc}") from exc
    except BotoCoreError as exc:
        raise AuditlakeError(f"S3 error writing s3://{lake.bucket}/{key(lake, rel)}: {exc}") from exc
