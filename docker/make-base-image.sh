#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 and venv support from
# Debian's own packages, for Docker builders that cannot pull
# python:3.11-slim-bookworm from a registry.
#
#   docker/make-base-image.sh [TAG]          # default TAG: mlrepro-base:bookworm
#   nox -s docker_build -- --base-image mlrepro-base:bookworm
#
# Needs root, debootstrap, Debian's archive keyring and a running Docker
# daemon (DOCKER_HOST is respected). Packages come from $DEBIAN_MIRROR, else
# from the bookworm mirror this machine's apt uses, else from deb.debian.org.
set -euo pipefail

TAG="${1:-mlrepro-base:bookworm}"
SUITE=bookworm
PACKAGES=python3.11,python3-venv,ca-certificates
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

rootfs=""

main() {
    check_requirements
    local mirror
    mirror="${DEBIAN_MIRROR:-$(find_apt_mirror)}"
    mirror="${mirror:-http://deb.debian.org/debian}"

    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/mlrepro-base.XXXXXX")"
    trap remove_rootfs EXIT

    echo "Bootstrapping Debian $SUITE ($(dpkg --print-architecture)) from $mirror into $rootfs"
    debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" \
        "$SUITE" "$rootfs" "$mirror"

    echo "Checking Python in the new root file system"
    chroot "$rootfs" python3.11 -c 'import ensurepip, ssl, venv, sys; print("Python", sys.version.split()[0])'
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/*

    echo "Importing the root file system as $TAG"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "Debian $SUITE minbase with $PACKAGES, from $mirror" \
        - "$TAG"
    docker image ls "$TAG"
}

check_requirements() {
    if [[ "$(id -u)" != 0 ]]; then
        fail "debootstrap needs root; run this script as root (for example with sudo)"
    fi
    if ! command -v debootstrap >/dev/null; then
        fail "debootstrap is not installed; install it with: apt-get install debootstrap"
    fi
    if [[ ! -r "$KEYRING" ]]; then
        fail "$KEYRING is missing; install it with: apt-get install debian-archive-keyring"
    fi
    if ! docker info >/dev/null 2>&1; then
        fail "no Docker daemon answers at ${DOCKER_HOST:-the default socket}; start dockerd first"
    fi
}

# Print the first URI that apt's sources on this machine use for the suite
# itself (not -updates or -security), in one-line or deb822 format.
find_apt_mirror() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$file" ]] || continue
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$file"
    done | head -n 1 | grep . && return

    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$file" ]] || continue
        # Paragraphs are separated by blank lines; a paragraph may list several suites.
        awk -v suite="$SUITE" '
            /^[[:space:]]*$/ { if (found && uri != "") { print uri; exit } uri = ""; found = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
            END { if (found && uri != "") print uri }' "$file"
    done | head -n 1
}

# debootstrap mounts /proc and /sys inside the new root and may bind-mount /dev.
# Unmount what is left there first, so that rm cannot reach the host's files.
remove_rootfs() {
    [[ -n "$rootfs" && -d "$rootfs" ]] || return 0
    local mount_point
    awk -v root="$rootfs" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts \
        | sort -r | while read -r mount_point; do umount -l "$mount_point" || true; done
    rm -rf --one-file-system "$rootfs"
}

fail() {
    echo "make-base-image.sh: error: $*" >&2
    exit 1
}

main "$@"
