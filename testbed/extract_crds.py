"""Copy the CRD manifests out of a Go module zip that `go mod download -json` fetched.

Usage: go mod download -json MODULE@VERSION | python3 extract_crds.py OUT_DIR
Writes OUT_DIR/*-crd.yaml from the module's manifests/crds/, atomically (a
temporary folder beside OUT_DIR, renamed when complete).
"""

import json
import pathlib
import sys
import tempfile
import zipfile


def main() -> None:
    info = json.load(sys.stdin)
    if "Error" in info and not info.get("Zip"):
        sys.exit(f"go mod download: {info['Error']}")
    out = pathlib.Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    inside = f"{info['Path']}@{info['Version']}/manifests/crds/"
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=".crds."))
    tmp.chmod(0o755)
    with zipfile.ZipFile(info["Zip"]) as archive:
        for name in archive.namelist():
            if name.startswith(inside) and name.endswith("-crd.yaml"):
                (tmp / name.rpartition("/")[2]).write_bytes(archive.read(name))
    if not any(tmp.iterdir()):
        sys.exit(f"no CRDs under {inside} in {info['Zip']}")
    tmp.rename(out)


if __name__ == "__main__":
    main()
