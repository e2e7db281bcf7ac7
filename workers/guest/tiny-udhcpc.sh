#!/bin/busybox sh
# udhcpc's event script in the archq tiny guest: the event is $1, the lease is in the environment
# ($interface, $ip, $mask as a prefix length, $router, $dns).
export PATH=/bin

case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    rm -f /run/archq-ipv4
    ;;
bound|renew)
    # A renewal of the same address must not drop it, even briefly.
    if [ "$(cat /run/archq-ipv4 2>/dev/null)" != "$ip/$mask" ]; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        for gateway in $router; do
            ip route add default via "$gateway" dev "$interface"
            break
        done
        : > /etc/resolv.conf
        for server in $dns; do
            echo "nameserver $server" >> /etc/resolv.conf
        done
        echo "$ip/$mask" > /run/archq-ipv4
    fi
    ;;
esac
exit 0
