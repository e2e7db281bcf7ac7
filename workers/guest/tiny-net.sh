#!/bin/busybox sh
# archq tiny guest networking, started by /init in the background right after the boot marker, so that
# neither the marker nor the ticks wait for drivers or DHCP. Prints exactly one line on the console:
#   ARCHQ-TINY-NET mac=<mac> ipv4=<addr>/<prefix>    a lease was taken and configured
#   ARCHQ-TINY-NET dhcp-failed mac=<mac>             a NIC, but no DHCP server answered
#   ARCHQ-TINY-NET none                              no ethernet interface appeared
export PATH=/bin

say() {
    echo "ARCHQ-TINY-NET $*" > /dev/console
}

# The build lists the virtio NIC drivers the kernel has as modules, dependencies first (busybox insmod does
# not resolve them); drivers built into the kernel are not listed.
while read -r module; do
    insmod "/lib/modules/$module.ko" || echo "archq-tiny: insmod $module failed" > /dev/console
done < /etc/archq/modules

# PCI probing and netdev registration happen inside insmod, so a NIC is normally there at once; the grace
# period is for a heavily loaded emulated machine, and costs a NIC-less guest only this background wait.
nic=""
tries=0
while [ -z "$nic" ] && [ "$tries" -lt 50 ]; do
    for dev in /sys/class/net/*; do
        # type 1 is ARPHRD_ETHER; lo is 772.
        if [ "$(cat "$dev/type" 2>/dev/null)" = 1 ]; then
            nic="${dev##*/}"
            break
        fi
    done
    if [ -z "$nic" ]; then
        sleep 0.1
        tries=$((tries + 1))
    fi
done
if [ -z "$nic" ]; then
    say none
    exit 0
fi

mac="$(cat "/sys/class/net/$nic/address")"
ip link set lo up
ip link set "$nic" up
# -n: give up (exit 1) when no lease comes after -t discovers -T seconds apart, about 20 s, generous for a
# DHCP server on the host; without -q udhcpc goes to the background once bound and renews the lease.
if udhcpc -i "$nic" -s /etc/archq/udhcpc.sh -n -t 10 -T 2 -x hostname:archq-tiny > /dev/null 2>&1 \
        && [ -s /run/archq-ipv4 ]; then
    say "mac=$mac ipv4=$(cat /run/archq-ipv4)"
else
    say "dhcp-failed mac=$mac"
fi
