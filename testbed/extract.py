"""Copy files out of a Go module zip that `go mod download -json` fetched and verified.

Usage: go mod download -json MODULE@VERSION | python3 extract.py OUT_DIR PATTERN...
Each PATTERN is a path inside the module, shell wildcards allowed
("manifests/crds/*-crd.yaml"). Writes the matching files, flat, into OUT_DIR,
atomically: a temporary folder beside OUT_DIR, renamed when complete. Fails when
a pattern matches nothing.
"""

import fnmatch
import json
import pathlib
import sys
import tempfile
import zipfile


def main() -> None:
    try:
        info = json.load(sys.stdin)
    except json.JSONDecodeError:
        sys.exit("go mod download gave no module information (is the Go module proxy reachable?)")
    if not pathlib.Path(info.get("Zip") or "/nonexistent").is_file():
        sys.exit(f"go mod download: {info.get('Error', 'no module zip')}")
    out, patterns = pathlib.Path(sys.argv[1]), sys.argv[2:]
    out.parent.mkdir(parents=True, exist_ok=True)
    root = f"{info['Path']}@{info['Version']}/"
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=".extract."))
    tmp.chmod(0o755)
    with zipfile.ZipFile(info["Zip"]) as archive:
        inside = [name.removeprefix(root) for name in archive.namelist()]
        for pattern in patterns:
            matched = fnmatch.filter(inside, pattern)
            if not matched:
                sys.exit(f"nothing matches {pattern} in {info['Zip']}")
            for name in matched:
                (tmp / name.rpartition("/")[2]).write_bytes(archive.read(root + name))
    tmp.rename(out)


if __name__ == "__main__":
    main()
