#!/usr/bin/env bash
# Builds dist/cairn_<version>_<arch>.deb: `make deb`.
#
# The package is self-contained so that an appliance needs no internet and no pip at install
# time: cairn and its pinned dependencies live in a virtual environment under /opt/cairn made
# for Debian's own /usr/bin/python3, /usr/bin/cairn runs it, and the systemd units from
# packaging/systemd go where systemd looks. The postinst makes the `cairn` system user,
# /etc/cairn and /var/lib/cairn. Wheels are kept in .cache/deb-wheels (keyed by
# pyproject.toml) so that a rebuild downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
# A PYTHONPATH naming a checkout would make pip think cairn is installed already.
unset PYTHONPATH PYTHONHOME
root=$PWD
python=/usr/bin/python3                       # the interpreter the package runs on
build_python=${CAIRN_BUILD_PYTHON:-.venv/bin/python}   # has pip; the one setup.sh made
pip=("$build_python" -m pip --disable-pip-version-check -q)
version=$("$build_python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
arch=$(dpkg --print-architecture)
pyver=$($python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

wheels=.cache/deb-wheels/$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$wheels/.complete" ]; then
  rm -rf "$wheels"
  "${pip[@]}" wheel -w "$wheels" .
  touch "$wheels/.complete"
fi
cairn_wheels=$(mktemp -d)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage" "$cairn_wheels"' EXIT
rm -rf build                      # setuptools would reuse a stale build/lib
"${pip[@]}" wheel --no-deps -w "$cairn_wheels" .

venv=$stage/opt/cairn
$python -m venv --without-pip "$venv"
"${pip[@]}" --python "$venv/bin/python3" install --no-index --no-compile \
  --find-links "$wheels" "$cairn_wheels"/cairn-*.whl
# The console scripts name the staging folder; /usr/bin/cairn is the one way in.
find "$venv/bin" -type f ! -name 'activate*' -exec grep -l "^#!$stage" {} + | xargs -r rm -f
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
# Byte-compiled once here with the target interpreter, owned by the package.
$python -m compileall -q -s "$stage" -p / "$venv/lib/python$pyver/site-packages" >/dev/null

install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/DEBIAN"
install -m 0755 packaging/deb/cairn-wrapper "$stage/usr/bin/cairn"
install -m 0644 packaging/systemd/*.service "$stage/lib/systemd/system/"
install -m 0755 packaging/deb/postinst packaging/deb/postrm "$stage/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  -e "s/@PYVER@/$pyver/g" -e "s/@PYNEXT@/${pyver%.*}.$(( ${pyver#*.} + 1 ))/" \
  packaging/deb/control.in > "$stage/DEBIAN/control"

mkdir -p dist
out=dist/cairn_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zzstd -z3 --build "$stage" "$out" >/dev/null
echo "$root/$out"
