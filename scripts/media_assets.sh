#!/usr/bin/env bash
# System tools and sample media for `msalign extract` / `predict` and their tests (Debian packages).
#   ffmpeg, espeak-ng        installed with apt-get (--no-install-recommends)
#   chromium                 the same way: the browser tests/test_report_browser.py drives headless
#   opencv-doc               Megamind.avi (11 s, a talking face with English speech)
#   pocketsphinx-testdata    16 kHz public-domain speech
# The two data packages are only unpacked (apt-get download + dpkg -x) into the media cache,
# ${MSALIGN_MEDIA:-~/.cache/msalign/media}, so none of their dependency trees is installed.
# Needs root (or sudo) for apt-get. Re-running is cheap: finished steps are skipped.
set -euo pipefail
media="${MSALIGN_MEDIA:-$HOME/.cache/msalign/media}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

updated=""
apt_update() {
  if [ -z "$updated" ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
}

missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
# a real browser for the HTML report test (tests/test_report_browser.py, driven by Playwright)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

unpack() {  # unpack PACKAGE into $media/PACKAGE unless the file $2 is already there
  local package="$1" marker="$2" work
  if [ -e "$media/$package/$marker" ]; then
    return
  fi
  apt_update
  work="$(mktemp -d)"
  chmod 777 "$work"  # apt-get download writes as the _apt user where it can
  (cd "$work" && apt-get download -qq "$package")
  mkdir -p "$media/$package"
  dpkg -x "$work"/"${package}"_*.deb "$media/$package"
  rm -rf "$work"
  if [ ! -e "$media/$package/$marker" ]; then
    echo "media_assets.sh: $package unpacked but $marker is not in it" >&2
    exit 1
  fi
}

unpack opencv-doc usr/share/doc/opencv-doc/examples/data/Megamind.avi
unpack pocketsphinx-testdata usr/share/pocketsphinx/test/data
echo "media assets in $media"
