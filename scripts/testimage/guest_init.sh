#!/bin/busybox sh
# /init of the microcloud test image (busybox only). Everything it reports goes to the
# serial console as "MCTEST: ..." lines that tests wait for.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "MCTEST: $* uptime=$(up)"; }
say "BOOT-OK"
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
# no udev: wait (at most 15 s: module probing is slow on a loaded TCG host) for a cdrom and eth0
i=0
while [ $i -lt 150 ]; do
  grep -q ' sr0$' /proc/partitions && [ -e /sys/class/net/eth0 ] && break
  sleep 0.1; i=$((i+1))
done

# graceful shutdown: the ACPI power button (what libvirt's shutdown presses) powers off.
# `button` + `evdev` give the button an /dev/input/event* that busybox acpid reads.
if [ -n "$(ls /dev/input/event* 2>/dev/null)" ]; then
  # busybox acpid runs CONFDIR/<action> for an event whose description holds the key.
  # It must stay in the foreground (-f) and log somewhere that exists: daemonised with its
  # default /var/log/acpid.log (no /var here) it died silently and the button did nothing.
  mkdir -p /etc/acpi
  echo 'PWRF power' > /etc/acpid.conf
  printf '#!/bin/sh\necho "MCTEST: POWER-BUTTON" >/dev/console\nsync\npoweroff -f\n' > /etc/acpi/power
  chmod +x /etc/acpi/power
  acpid -f -c /etc/acpi -a /etc/acpid.conf -l /dev/console &
  sleep 0.2
  if kill -0 $! 2>/dev/null; then say "ACPID-UP"; else say "ACPID-FAILED"; fi
else
  say "NO-POWER-BUTTON"
fi

# NoCloud seed: the volume labelled cidata
iid=""; host=""
mkdir -p /mnt
dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt 2>/dev/null; then
  iid=$(sed -n 's/^instance-id:[ ]*//p' /mnt/meta-data | tr -d "\"'\r")
  host=$(sed -n 's/^local-hostname:[ ]*//p' /mnt/meta-data | tr -d "\"'\r")
  umount /mnt
  [ -n "$host" ] && hostname "$host"
  say "SEED dev=$dev instance-id=$iid hostname=$host"
else
  say "NO-SEED"
fi

# udhcpc runs in the background with its output discarded: report straight to the console
cat > /bin/dhcp-event <<'EOS'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "$ip" > /run-ip
    echo "MCTEST: LEASE ip=$ip mask=$mask router=$router server=$serverid uptime=$(cut -d' ' -f1 /proc/uptime)" >/dev/console ;;
  leasefail|nak) echo "MCTEST: DHCP-$1 uptime=$(cut -d' ' -f1 /proc/uptime)" >/dev/console ;;
esac
exit 0
EOS
chmod +x /bin/dhcp-event
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  say "ETH0 mac=$(cat /sys/class/net/eth0/address)"
  # stays in the background to renew the lease
  udhcpc -i eth0 -s /bin/dhcp-event -t 30 -T 1 -A 2 -b -x hostname:"${host:-mctest}" >/dev/null 2>&1
  i=0; while [ ! -s /run-ip ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  mkdir -p /www
  echo "instance-id=$iid hostname=$host" > /www/index.html
  httpd -p 80 -h /www && say "HTTP-UP port=80"
  say "READY ip=$(cat /run-ip 2>/dev/null)"
else
  say "NO-ETH0"
  say "READY ip="
fi

# report disks that appear or disappear (live attach/detach tests)
(
  prev=$(awk 'NR>2 {print $4}' /proc/partitions | sort | tr '\n' ' ')
  say "BLOCKDEVS [$prev]"
  while true; do
    cur=$(awk 'NR>2 {print $4}' /proc/partitions | sort | tr '\n' ' ')
    [ "$cur" != "$prev" ] && say "BLOCKDEVS [$cur]" && prev=$cur
    sleep 0.3
  done
) &

# kernel argument mctest.poweroff=N: power off N seconds after READY (else stay up)
off=$(sed -n 's/.*mctest\.poweroff=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$off" ]; then
  (sleep "$off"; say "POWEROFF"; sync; poweroff -f) &
fi

# an interactive shell on the serial console (for `microcloud console`)
while true; do
  setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
  sleep 0.2
done
