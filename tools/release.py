"""make release: the artifact a StackSet deploys to every account and region.

    .venv/bin/python tools/release.py --prefix <bucket prefix> --regions eu-west-1,us-east-1 \
        [--org-id o-xxxxxxxxxx --create-buckets] [--out dist] [--no-upload]

1. ``sam build`` (no Docker: the layer is built for arm64 by pip) into ``<out>/build``;
2. each function's and the layer's built folder zipped reproducibly (sorted entries, fixed
   times: the same code gives the same bytes), named by its SHA-256 - identical code is one
   object, and a new release never overwrites an old one's code;
3. the template rendered without transforms (tools/render.py: Fn::ForEach expanded, the SAM
   transform applied, no managed policy left by name), the code read from
   ``${ArtifactBucketPrefix}-${AWS::Region}`` - a service-managed StackSet refuses transforms,
   and Lambda reads code only from a bucket in the function's region;
4. the artifacts uploaded to ``<prefix>-<region>`` for every target region, and the template
   (too large for a StackSet's 51,200-byte TemplateBody) to the first region's bucket. With
   ``--create-buckets`` a missing bucket is created: versioned, encrypted, public access
   blocked, TLS only, readable (GetObject) by the accounts of the organisation only
   (``aws:PrincipalOrgID``).

Writes ``<out>/template.json`` and ``<out>/release.json`` (version, keys, template URL, sizes)
and prints what it did, with its size and time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import render

ROOT: Final = Path(__file__).resolve().parent.parent
ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no build time in the bytes
PREFIX_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]$")
REGION_PATTERN: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ORG_PATTERN: Final = re.compile(r"^o-[a-z0-9]{10,32}$")
KEY_ROOT: Final = "ops-autopilot"


class ReleaseError(RuntimeError):
    """The release cannot be made (and why); nothing was uploaded after it."""


@dataclass
class Release:
    version: str
    prefix: str
    regions: list[str]
    code: dict[str, str]  # logical id -> S3 key
    template_key: str
    template_url: str
    template_bytes: int
    artifact_bytes: dict[str, int] = field(default_factory=dict)  # key -> bytes
    uploaded: dict[str, list[str]] = field(default_factory=dict)  # region -> keys put
    seconds: float = 0.0


def bucket_name(prefix: str, region: str) -> str:
    return f"{prefix}-{region}"


def zip_folder(folder: Path) -> bytes:
    """The folder's files in a zip whose bytes depend only on their names, modes and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), ZIP_TIME)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return buffer.getvalue()


def version() -> str:
    """The commit released (with ``-dirty`` when the work tree has changes), else ``dev``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "dev"
    return commit + ("-dirty" if dirty.strip() else "")


def sam_build(build_dir: Path) -> Path:
    """``sam build`` of template.yaml into ``build_dir``; the built template's path."""
    sam = Path(sys.executable).parent / "sam"
    command = [str(sam), "build", "--build-dir", str(build_dir), "--no-cached"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )
    if done.returncode != 0:
        raise ReleaseError(f"sam build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return build_dir / "template.yaml"


def package(
    built: Mapping[str, Any], build_dir: Path, artifacts: Path
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Zip every function's and layer's built folder: ({logical id: key}, {key: bytes})."""
    expanded = render.language_extensions(built)
    code: dict[str, str] = {}
    blobs: dict[str, bytes] = {}
    for name in render.serverless_functions(expanded):
        properties = expanded["Resources"][name]["Properties"]
        uri = properties.get("CodeUri") or properties.get("ContentUri")
        folder = build_dir / str(uri)
        if not isinstance(uri, str) or not folder.is_dir():
            raise ReleaseError(f"{name}: no built folder ({uri!r}) in {build_dir}")
        data = zip_folder(folder)
        key = f"{KEY_ROOT}/code/{hashlib.sha256(data).hexdigest()[:32]}.zip"
        code[name] = key
        blobs[key] = data
    for key, data in blobs.items():
        target = artifacts / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return code, blobs


def org_read_policy(bucket: str, org_id: str, partition: str = "aws") -> dict[str, Any]:
    """The bucket policy: GetObject for the organisation's accounts only, nothing without TLS."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TheOrganisationReadsTheCode",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"{arn}/{KEY_ROOT}/*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": org_id}},
            },
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def ensure_bucket(s3: Any, bucket: str, region: str, org_id: str) -> None:
    """Create the region's artifact bucket when it is missing (versioned, encrypted, private,
    readable by the organisation); an existing one is left as it is."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except s3.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise ReleaseError(f"bucket {bucket}: {err}") from err
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            # A policy limited by aws:PrincipalOrgID is not public to S3: all four blocks hold.
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(org_read_policy(bucket, org_id)))


def upload(
    release: Release, blobs: Mapping[str, bytes], template: bytes, org_id: str | None, create: bool
) -> None:
    """Put the artifacts into every region's bucket (an object already there with the same key
    is the same code: not put again) and the template into the first region's."""
    import boto3

    for n, region in enumerate(release.regions):
        s3 = boto3.client("s3", region_name=region)
        bucket = bucket_name(release.prefix, region)
        if create:
            if not org_id:
                raise ReleaseError(
                    "--create-buckets needs --org-id (the bucket policy names the organisation)"
                )
            ensure_bucket(s3, bucket, region, org_id)
        put: list[str] = []
        for key, data in sorted(blobs.items()):
            try:
                s3.head_object(Bucket=bucket, Key=key)
                continue
            except s3.exceptions.ClientError as err:
                if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise ReleaseError(f"s3://{bucket}/{key}: {err}") from err
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            put.append(key)
        if n == 0:
            s3.put_object(
                Bucket=bucket, Key=release.template_key, Body=template, ContentType="application/json"
            )
            put.append(release.template_key)
        release.uploaded[region] = put


def make_release(
    prefix: str,
    regions: Sequence[str],
    out: Path,
    org_id: str | None = None,
    create_buckets: bool = False,
    do_upload: bool = True,
    build_dir: Path | None = None,
) -> Release:
    """Build, package, render and (unless ``do_upload`` is false) upload; see the module doc."""
    started = time.monotonic()
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ReleaseError(
            f"bucket prefix {prefix!r}: 3-42 characters, a-z 0-9 . -, not starting or ending with . or -"
        )
    if not regions or any(not REGION_PATTERN.fullmatch(r) for r in regions):
        raise ReleaseError(f"regions {list(regions)!r}: one or more region names, e.g. eu-west-1,us-east-1")
    if org_id is not None and not ORG_PATTERN.fullmatch(org_id):
        raise ReleaseError(f"organisation id {org_id!r}: o- and 10 to 32 letters or digits")
    from samcli.yamlhelper import yaml_parse

    out.mkdir(parents=True, exist_ok=True)
    build = build_dir or out / "build"
    built_path = sam_build(build) if build_dir is None else build / "template.yaml"
    built = yaml_parse(built_path.read_text())
    code, blobs = package(built, build, out / "artifacts")
    rendered = render.without_transforms(built, code, regions[0])
    template = json.dumps(rendered, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256(template).hexdigest()[:32]
    template_key = f"{KEY_ROOT}/templates/{digest}.json"
    url_host = "s3.amazonaws.com" if regions[0] == "us-east-1" else f"s3.{regions[0]}.amazonaws.com"
    release = Release(
        version=version(),
        prefix=prefix,
        regions=list(regions),
        code=code,
        template_key=template_key,
        template_url=f"https://{bucket_name(prefix, regions[0])}.{url_host}/{template_key}",
        template_bytes=len(template),
        artifact_bytes={k: len(v) for k, v in blobs.items()},
    )
    (out / "template.json").write_bytes(template)
    if do_upload:
        upload(release, blobs, template, org_id, create_buckets)
    release.seconds = round(time.monotonic() - started, 1)
    (out / "release.json").write_text(json.dumps(asdict(release), indent=2) + "\n")
    return release


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--prefix", required=True, help="artifact bucket prefix: buckets are <prefix>-<region>"
    )
    parser.add_argument("--regions", required=True, help="target regions, comma-separated")
    parser.add_argument("--org-id", help="the organisation's id (o-...), for the buckets' policy")
    parser.add_argument("--create-buckets", action="store_true", help="create missing buckets")
    parser.add_argument("--no-upload", action="store_true", help="build and render only")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default dist/)")
    args = parser.parse_args(argv)
    try:
        release = make_release(
            args.prefix,
            [r.strip() for r in args.regions.split(",") if r.strip()],
            Path(args.out),
            org_id=args.org_id,
            create_buckets=args.create_buckets,
            do_upload=not args.no_upload,
        )
    except (ReleaseError, render.RenderError) as err:
        print(f"release failed: {err}", file=sys.stderr)
        return 1
    total = sum(release.artifact_bytes.values())
    print(
        f"release {release.version}: {len(release.artifact_bytes)} artifacts, {total / 1e6:.1f} MB zipped; "
        f"template {release.template_bytes / 1e3:.0f} KB; {release.seconds} s"
    )
    for name, key in sorted(release.code.items()):
        print(f"  {name:<28} {key} ({release.artifact_bytes[key] / 1e6:.1f} MB)")
    for region, keys in release.uploaded.items():
        print(f"  {bucket_name(release.prefix, region)}: {len(keys)} objects put")
    print(f"  template: {release.template_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
