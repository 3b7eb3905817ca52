"""The reference device's session and control side (PROTOCOL.md sections 4, 7.1) over the fake network."""

from __future__ import annotations

import dataclasses

from serverdriver import World

from loa.protocol.control import (
    TELEMETRY_FIELDS,
    Amp,
    Board,
    BoardClear,
    Config,
    ConfigValues,
    FmPreset,
    FmPresets,
    Hello,
    Mute,
    Reboot,
    Source,
    State,
    Telemetry,
    TimeReq,
    Volume,
)


def test_handshake_hello_config_and_first_reports() -> None:
    world = World(1)
    node = world.add_device(offset_s=7.5, drift_ppm=-30)
    assert world.run_until(lambda: node.core.clock.ready, 10.0)
    world.run(2.0)
    server, core = world.server, node.core
    # the device opened the session: the first reliable message is hello, with id 1
    (hello,) = server.messages_of(Hello)
    assert hello.id == 1
    assert hello.kind == "speaker"
    assert {"fm", "amp", "multicast"} <= set(hello.caps)
    assert server.connects[0][1] == core.public_key
    # the server's config (sent on hello) is applied: zones and the telemetry interval
    assert core.settings.zones == ("79", "760", "26734", "26734-03")
    assert core.settings.get("telemetry_s") == 10
    assert core.settings.get("watchdog_ms") == 1500  # a default of section 4.6 until set
    # state on start, clock probes at up to 4 per second until the estimate is ready
    states = server.messages_of(State)
    assert (states[0].bid, states[0].src) == (None, "idle")
    probes = server.messages_of(TimeReq)
    assert len(probes) >= 8
    assert core.statistics().clock_ready
    # the estimate is within a few ms of the truth although the device clock is 7.5 s off
    assert abs(core.clock.estimator.estimate().drift_ppm + 30) < 1000
    assert core.faults(0.0) == ()


def test_telemetry_carries_every_field_of_the_table() -> None:
    world = World(2)
    node = world.add_device()
    world.run(25.0)  # telemetry_s is 10 in the test server's config
    reports = world.server.messages_of(Telemetry)
    assert len(reports) >= 3
    first, last = reports[0].v, reports[-1].v
    assert "clock" in first.faults  # the first report goes out before the clock estimate is ready
    values = dataclasses.asdict(last)
    missing = [name for name in TELEMETRY_FIELDS if values[name] is None]
    assert missing == []
    assert last.faults == ()
    assert len(last.imei) == 15
    assert last.mode == "idle"
    assert last.stream == "idle"
    assert last.uptime_s >= 20
    assert node.core.statistics().telemetry_sent == len(reports)


def test_commands_are_applied_and_stale_ids_ignored() -> None:
    world = World(3)
    node = world.add_device()
    world.run(2.0)
    pub, core = world.pub(node), node.core
    server = world.server
    server.send(pub, Config(values=ConfigValues(vol_min=10, vol_max=70, preroll_ms=250)))
    server.send(pub, Volume(level=95))
    server.send(pub, Mute(on=True))
    server.send(pub, Amp(on=True, preroll_ms=1200))
    server.send(pub, Source(src="fm", freq_khz=99900))
    server.send(pub, FmPresets(presets=(FmPreset(freq_khz=97000, name="VOV1"),)))
    server.send(pub, Board(item=4, cls=0, lvl=1, text="Lịch tiêm chủng"))
    world.run(1.0)
    settings = core.settings
    assert settings.volume == 70  # clamped into [vol_min, vol_max]
    assert settings.muted
    assert settings.amp_held
    assert settings.preroll_ms == 1200  # amp's preroll replaces the config's
    assert (settings.source, settings.source_khz) == ("fm", 99900)
    assert settings.fm_presets[0].name == "VOV1"
    assert settings.boards[4].text == "Lịch tiêm chủng"
    assert core.amp_state(node.clock.local(world.net.now)) in ("warming", "on")
    # an older command for the same state key (a late retransmission) changes nothing (section 4.4)
    core._on_message(Volume(level=20, id=1), 0.0)  # the volume above had a higher id
    assert settings.volume_level == 95
    server.send(pub, BoardClear(item=4))
    world.run(1.0)
    assert settings.boards == {}
    # the FM source plays (simulated) while nothing is broadcast, and the state says so
    assert any(m.src == "fm" for m in server.messages_of(State))


def test_reboot_draws_a_new_boot_and_says_hello_again() -> None:
    world = World(4)
    node = world.add_device()
    world.run(3.0)
    pub = world.pub(node)
    world.server.send(pub, Volume(level=33))
    boot = node.core.boot
    world.server.send(pub, Reboot(delay_ms=500))
    assert world.run_until(lambda: node.core.reboots == 1, 5.0)
    assert world.run_until(lambda: len(world.server.messages_of(Hello)) == 2, 10.0)
    assert node.core.boot != boot
    assert node.core.settings.volume_level == 33  # settings persist across reboots
    assert world.server.messages_of(Hello)[-1].id == 1  # ids start again at 1 with the new boot
