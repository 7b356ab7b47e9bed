#!/bin/sh
# Check that the base image can run mlrepro's hash-locked environment, and
# select the lock for the image's architecture. The Dockerfile runs this first,
# so a wrong base image or lock fails the build before anything is downloaded.
#
#   check-platform.sh LOCK_DIR [LOCK_PLATFORM]
#
# LOCK_PLATFORM is linux-64, linux-aarch64, or auto (default) for the platform
# of the image's architecture. On success this writes LOCK_DIR/selected.env,
# which sets LOCK_PLATFORM and PYTHON (the interpreter the lock is made for).
set -eu

lock_dir="$1"
requested="${2:-auto}"

fail() {
    echo "check-platform.sh: error: $*" >&2
    exit 1
}

# dpkg reports the userland's architecture, which is what the wheels must match.
if command -v dpkg >/dev/null 2>&1; then
    architecture="$(dpkg --print-architecture)"
else
    architecture="$(uname -m)"
fi
case "$architecture" in
    amd64 | x86_64) platform=linux-64 ;;
    arm64 | aarch64) platform=linux-aarch64 ;;
    *) fail "no lock for the architecture $architecture; mlrepro's Linux locks are linux-64 (amd64) and linux-aarch64 (arm64)" ;;
esac

if [ "$requested" != auto ] && [ "$requested" != "$platform" ]; then
    fail "LOCK_PLATFORM=$requested does not match this build's architecture $architecture, whose lock is $platform;" \
        "drop the LOCK_PLATFORM build argument, or build for the lock's architecture with docker build --platform"
fi

for role in "" "test-"; do
    lock="$lock_dir/requirements-$role$platform.txt"
    [ -f "$lock" ] || fail "$lock is missing from the build context; run nox -s lock to create it"
    # The first line reads: # mlrepro <role> lock for <platform> (python <X.Y>), made by ...
    header="$(head -n 1 "$lock")"
    header_platform="$(echo "$header" | sed -n 's/^# mlrepro [a-z]* lock for \([^ ]*\) (python .*/\1/p')"
    if [ "$header_platform" != "$platform" ]; then
        fail "$lock does not hold the lock for $platform (its first line is: $header);" \
            "regenerate it with nox -s lock"
    fi
done

python_version="$(head -n 1 "$lock_dir/requirements-$platform.txt" | sed -n 's/.*(python \([0-9.]*\)).*/\1/p')"
[ -n "$python_version" ] || fail "no Python version in the first line of $lock_dir/requirements-$platform.txt"
python="$(command -v "python$python_version" || true)"
if [ -z "$python" ]; then
    fail "the base image has no python$python_version, which the $platform lock is made for;" \
        "use BASE_IMAGE=python:$python_version-slim-bookworm, or an image made by docker/make-base-image.sh"
fi
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    fail "$python in the base image cannot create virtual environments (no ensurepip);" \
        "install python$python_version-venv in the base image"
fi

printf 'LOCK_PLATFORM=%s\nPYTHON=%s\n' "$platform" "$python" > "$lock_dir/selected.env"
echo "Base image: $architecture, $("$python" --version) at $python; lock: $platform"
