#!/bin/bash
# Builds the network-boot image of Leasehold's real-boot test (tests/vm_boot.rs): Debian's
# kernel and an initramfs of busybox-static, the NIC drivers, the `leasehold` binary with its
# libraries, and one server's node certificate. Its /init brings the network up by DHCP and
# runs `leasehold node run --boot-args /proc/cmdline`, as a machine's image would.
#
# usage: build-image.sh OUT_DIR CACHE_DIR LEASEHOLD_BINARY CERTS_DIR SERVER_ID
#   writes OUT_DIR/vmlinuz and OUT_DIR/initrd.img; the kernel .deb is fetched once into
#   CACHE_DIR (apt-get download; the host's /boot is not touched).
#        build-image.sh --kernel-only OUT_DIR CACHE_DIR
#   writes OUT_DIR/vmlinuz only.
# Needs: busybox-static, kmod (modprobe, depmod), gzip, xz-utils, binutils (strip), apt.
set -euo pipefail
export LC_ALL=C
KERNEL_ONLY=0
if [ "${1:-}" = "--kernel-only" ]; then KERNEL_ONLY=1; shift; fi
OUT=$(realpath -m "$1"); CACHE=$(realpath -m "$2")
mkdir -p "$OUT" "$CACHE"

# 1. The kernel: the package linux-image-amd64 points at, extracted into the cache.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$KPKG" ] || { echo "build-image: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 2; }
KROOT=$CACHE/$KPKG
if [ ! -d "$KROOT/lib/modules" ]; then
  echo "build-image: fetching $KPKG ..." >&2
  ( cd "$CACHE" && apt-get -o APT::Sandbox::User=root download -q "$KPKG" >&2 )
  rm -rf "$KROOT.tmp" && dpkg-deb -x "$CACHE/${KPKG}"_*.deb "$KROOT.tmp"
  depmod -b "$KROOT.tmp" "$(ls "$KROOT.tmp/lib/modules")"
  rm -f "$CACHE/${KPKG}"_*.deb && mv "$KROOT.tmp" "$KROOT"
fi
KVER=$(ls "$KROOT/lib/modules")
cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
if [ "$KERNEL_ONLY" = 1 ]; then
  echo "build-image: $OUT/vmlinuz ($KVER)" >&2
  exit 0
fi
BIN=$3; CERTS=$4; SERVER=$5
# 2. The initramfs.
ST=$(mktemp -d); trap 'rm -rf "$ST"' EXIT
mkdir -p "$ST"/{bin,sbin,etc/udhcpc,etc/leasehold/certs/nodes,proc,sys,dev,tmp,run,var,lib/modules}
cp /bin/busybox "$ST/bin/busybox"
for applet in $(/bin/busybox --list); do [ -e "$ST/bin/$applet" ] || ln -s busybox "$ST/bin/$applet"; done
# Debian's kernel has the NIC drivers as modules: copied in the order modprobe would load them.
modprobe -d "$KROOT" -S "$KVER" -a --show-depends virtio_pci virtio_net \
  | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko")
    case "$name" in
      *.xz) xz -dc "$ko" > "$ST/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.zst) zstd -qdc "$ko" > "$ST/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *) cp "$ko" "$ST/lib/modules/$name" ;;
    esac
    echo "$name" >> "$ST/lib/modules/load-order"
  done
# The agent, stripped (a debug build is ten times its size with symbols), and its libraries.
strip -o "$ST/bin/leasehold" "$BIN"
ldd "$BIN" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | while read -r lib; do
  mkdir -p "$ST$(dirname "$lib")"; cp -L "$lib" "$ST$lib"
done
# Only what a node needs of the federation's certificates: the CA's certificate, its own pair.
cp "$CERTS/ca.crt" "$ST/etc/leasehold/certs/"
cp "$CERTS/nodes/$SERVER.crt" "$CERTS/nodes/$SERVER.key" "$ST/etc/leasehold/certs/nodes/"
cat > "$ST/etc/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    ip link set "$interface" up
    [ -n "$router" ] && for r in $router; do ip -4 route add default via "$r" dev "$interface"; break; done
    ;;
esac
exit 0
SCRIPT
cat > "$ST/init" <<'SCRIPT'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "image: up, cmdline: $(cat /proc/cmdline)"
while read -r module; do insmod "/lib/modules/$module" || echo "image: insmod $module failed"; done < /lib/modules/load-order
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
udhcpc -i eth0 -s /etc/udhcpc/default.script -t 10 -T 1 -n -q -f || echo "image: no DHCP lease"
echo "image: network up: $(ip -4 -o addr show eth0)"
mkdir -p /var/leasehold
# Software emulation is slow: the workload gets a minute to pass its health check.
/bin/leasehold node run --boot-args /proc/cmdline --certs /etc/leasehold/certs \
  --work /var/leasehold --start-timeout-ms 60000
echo "image: node agent exited ($?)"
poweroff -f
SCRIPT
chmod 0755 "$ST/init" "$ST/etc/udhcpc/default.script"
( cd "$ST" && find . -mindepth 1 | sort | /bin/busybox cpio -o -H newc -R 0:0 2>/dev/null ) | gzip -1 > "$OUT/initrd.img"
echo "build-image: $OUT/vmlinuz ($KVER), $OUT/initrd.img ($(stat -c %s "$OUT/initrd.img") bytes)" >&2
