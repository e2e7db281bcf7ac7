"""The tiny guest's network line, as tests read it off the serial console: three shapes, nothing else."""

from __future__ import annotations

import ipaddress

from workers.guest.tiny import NET_TAG, TinyNet, net_line_pattern, parse_net_line


def test_a_lease_gives_the_mac_and_the_address_with_its_prefix() -> None:
    net = parse_net_line("ARCHQ-TINY-NET mac=52:54:00:a7:13:01 ipv4=192.168.213.151/24")
    assert net == TinyNet(status="up", mac="52:54:00:a7:13:01", ipv4=ipaddress.IPv4Interface("192.168.213.151/24"))


def test_a_nic_without_a_lease_gives_its_mac() -> None:
    assert parse_net_line("ARCHQ-TINY-NET dhcp-failed mac=52:54:00:a7:13:02") == TinyNet(
        status="dhcp-failed", mac="52:54:00:a7:13:02"
    )


def test_no_nic() -> None:
    assert parse_net_line("ARCHQ-TINY-NET none") == TinyNet(status="none")


def test_the_serial_ports_carriage_return_is_ignored() -> None:
    assert parse_net_line("ARCHQ-TINY-NET none\r") == TinyNet(status="none")


def test_other_console_lines_are_not_network_lines() -> None:
    for line in (
        "ARCHQ-TINY-BOOTED arch=x86_64",
        "archq-tiny tick 3",
        "ARCHQ-TINY-NET",
        "ARCHQ-TINY-NET mac=52:54:00:a7:13:01",
        "ARCHQ-TINY-NET mac=52:54:00:a7:13:01 ipv4=192.168.213.151",
        "ARCHQ-TINY-NET none archq-tiny tick 4",
        " ARCHQ-TINY-NET none",
    ):
        assert parse_net_line(line) is None, line


def test_the_pattern_matches_exactly_the_lines_the_parser_accepts() -> None:
    assert net_line_pattern().pattern.startswith(f"^{NET_TAG} ")
    assert net_line_pattern().match("ARCHQ-TINY-NET mac=52:54:00:a7:13:01 ipv4=10.0.2.15/24")["ipv4"] == "10.0.2.15/24"
    assert net_line_pattern().match("archq-tiny tick 1") is None
