#!/usr/bin/env bash
# The cairn demo: protect a small ext4 disk image, change it, and show that every point is
# whole: restore the oldest, delete a middle one, check everything. Works in ./demo-work.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"
work=demo-work
rm -rf "$work"; mkdir -p "$work/files"
export CAIRN_REPO="$work/repo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a 64 MiB ext4 disk image with some files (the machine we protect)"
for i in $(seq 1 20); do head -c 200000 /dev/urandom > "$work/files/data$i.bin"; done
cp README.md "$work/files/"
mkfs.ext4 -q -F -d "$work/files" "$work/disk.img" 64M >/dev/null
ls -lh "$work/disk.img"

step "cairn init"
cairn init

step "first backup: reads everything once"
cairn backup --volume web01-sda "$work/disk.img"

step "the machine changes: a file is added, another deleted"
cp "$work/disk.img" "$work/disk-before.img"
head -c 300000 /dev/urandom > "$work/new.bin"
debugfs -w -R "write $work/new.bin new.bin" "$work/disk.img" >/dev/null 2>&1
debugfs -w -R "rm data3.bin" "$work/disk.img" >/dev/null 2>&1
python3 scripts/changed_ranges.py "$work/disk-before.img" "$work/disk.img" > "$work/changed.json"
echo "a change tracker reports $(python3 -c "import json;print(len(json.load(open('$work/changed.json'))))" ) changed ranges"

step "incremental backup with the tracker's ranges: reads only what changed"
cairn backup --volume web01-sda --changed-ranges "$work/changed.json" "$work/disk.img"

step "incremental backup by full scan (no tracker): stores only what changed"
debugfs -w -R "rm data4.bin" "$work/disk.img" >/dev/null 2>&1
cairn backup --volume web01-sda "$work/disk.img"

step "cairn points"
cairn points

oldest=$(cairn points --json | python3 -c "import json,sys;print(json.load(sys.stdin)[0]['id'])")
middle=$(cairn points --json | python3 -c "import json,sys;print(json.load(sys.stdin)[1]['id'])")

step "delete the middle point: the others are untouched (it stays restorable for 3 days)"
cairn delete "$middle"

step "restore the oldest point and compare it with the original disk"
cairn restore "$oldest" "$work/restored.img"
cmp "$work/disk-before.img" "$work/restored.img" && echo "restored image is identical, byte for byte"

step "restore the newest as qcow2 and let qemu-img compare it"
cairn restore web01-sda@latest "$work/restored.qcow2" --format qcow2
qemu-img compare "$work/disk.img" "$work/restored.qcow2"

step "Backup Insights: browse the newest point and compare it with the oldest, file by file"
cairn ls web01-sda@latest /
cairn diff "$oldest" web01-sda@latest
echo "the first line of README.md in the oldest point, read without restoring it:"
cairn cat "$oldest" /README.md | head -1

step "instant access: a writable clone of the oldest point, served over NBD"
cairn clone "$oldest" --name sandbox
cairn export sandbox --nbd 127.0.0.1:10899 > "$work/export.log" 2>&1 &
export_pid=$!
trap 'kill $export_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q exporting "$work/export.log" && break; sleep 0.1; done
cat "$work/export.log"
url=$(grep -o 'nbd://[^ ]*' "$work/export.log")  # the export's name is a secret it prints
qemu-io -f raw -c "write -P 0x42 0 1M" "$url" | head -1
echo "the clone now differs from the original disk where it was written:"
qemu-img compare -f raw "$work/disk-before.img" "$url" | head -1 || true
echo "while the point it came from is untouched:"
kill $export_pid; wait $export_pid 2>/dev/null || true
cairn restore "$oldest" "$work/restored-again.img"
cmp "$work/disk-before.img" "$work/restored-again.img" && echo "oldest point still identical"
cairn clone-rm sandbox

step "cairn verify --read-data"
cairn verify --read-data

step "cairn stats"
cairn stats
printf '\nthe demo repository is in %s; try: CAIRN_REPO=%s .venv/bin/cairn points\n' "$work" "$work/repo"
