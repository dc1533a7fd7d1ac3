"""CLI commands of the instances area: launch, create, start/stop/restart, delete, list, info,
config, console and snapshots (`microcloud snapshot ...`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

import click
import yaml

from microcloud.client import Client
from microcloud.commands.instance_snapshots import snapshot
from microcloud.output import format_option, show
from microcloudd.api.errors import Conflict, InvalidArgument, MicrocloudError


def _key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"expected key=value, not {pair!r}")
        out[key] = value
    return out


def _create(client: Client, image: str, name: str, start: bool, cpu: int | None, memory: str | None,
            network: str | None, storage: str | None, config: tuple[str, ...], profiles: tuple[str, ...],
            no_profiles: bool) -> None:
    cfg = _key_values(config)
    if cpu is not None:
        cfg["limits.cpu"] = str(cpu)
    if memory is not None:
        cfg["limits.memory"] = memory
    devices: dict[str, dict[str, str]] = {}
    if network:
        devices["eth0"] = {"type": "nic", "network": network, "name": "eth0"}
    if storage:
        devices["root"] = {"type": "disk", "path": "/", "pool": storage}
    body: dict[str, Any] = {"name": name, "type": "virtual-machine", "config": cfg, "devices": devices,
                            "source": {"type": "image", "alias": image}, "start": start}
    if profiles and no_profiles:
        raise InvalidArgument("--profile and --no-profiles exclude each other")
    if profiles or no_profiles:  # as lxc: -p replaces the default profile; none given: the server's default
        body["profiles"] = list(profiles)
    if len(image) >= 12 and all(c in "0123456789abcdef" for c in image.lower()):
        body["source"] = {"type": "image", "fingerprint": image}
    client.call("instances_create", body=body, wait=True)


def _create_options(f: Any) -> Any:
    for opt in reversed([
        click.argument("image"), click.argument("name"),
        click.option("--cpu", type=int, help="vCPUs (limits.cpu)"),
        click.option("--memory", help="memory, e.g. 512MiB or 2GiB (limits.memory)"),
        click.option("--network", help="network of eth0 (default: the cluster's default network)"),
        click.option("--storage", help="storage pool of the root disk"),
        click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                     help="config (repeatable)"),
        click.option("-p", "--profile", "profiles", multiple=True, metavar="PROFILE",
                     help="profile to apply, in order (repeatable; default: the default profile)"),
        click.option("--no-profiles", is_flag=True, help="apply no profile (give the devices yourself)"),
    ]):
        f = opt(f)
    return f


@click.command()
@_create_options
@click.pass_obj
def launch(client: Client, image: str, name: str, cpu: int | None, memory: str | None, network: str | None,
           storage: str | None, config: tuple[str, ...], profiles: tuple[str, ...],
           no_profiles: bool) -> None:
    """Create a virtual machine NAME from IMAGE (alias or fingerprint) and start it."""
    _create(client, image, name, True, cpu, memory, network, storage, config, profiles, no_profiles)
    click.echo(f"Instance {name} launched")


@click.command()
@_create_options
@click.pass_obj
def create(client: Client, image: str, name: str, cpu: int | None, memory: str | None, network: str | None,
           storage: str | None, config: tuple[str, ...], profiles: tuple[str, ...],
           no_profiles: bool) -> None:
    """Create a virtual machine NAME from IMAGE without starting it (LXD's `lxc init`)."""
    _create(client, image, name, False, cpu, memory, network, storage, config, profiles, no_profiles)
    click.echo(f"Instance {name} created")


def _state(client: Client, names: tuple[str, ...], action: str, **extra: Any) -> None:
    for name in names:
        client.call("instance_state_put", name=name, body={"action": action, **extra}, wait=True)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def start(client: Client, names: tuple[str, ...]) -> None:
    """Start instances."""
    _state(client, names, "start")


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="power off at once instead of a clean shutdown")
@click.option("--timeout", type=int, default=-1, help="seconds to wait for a clean shutdown (default 30)")
@click.pass_obj
def stop(client: Client, names: tuple[str, ...], force: bool, timeout: int) -> None:
    """Stop instances (ACPI shutdown, powered off after --timeout)."""
    _state(client, names, "stop", force=force, timeout=timeout)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="reset at once instead of a clean restart")
@click.option("--timeout", type=int, default=-1, help="seconds to wait for a clean shutdown (default 30)")
@click.pass_obj
def restart(client: Client, names: tuple[str, ...], force: bool, timeout: int) -> None:
    """Restart instances."""
    _state(client, names, "restart", force=force, timeout=timeout)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="stop a running instance first")
@click.pass_obj
def delete(client: Client, names: tuple[str, ...], force: bool) -> None:
    """Delete instances (a running one only with --force, which powers it off first)."""
    for name in names:
        try:
            client.call("instance_delete", name=name, wait=True)
        except Conflict:
            if not force:
                raise Conflict(f"Instance {name} is running: stop it first, or use --force") from None
            client.call("instance_state_put", name=name, body={"action": "stop", "force": True}, wait=True)
            client.call("instance_delete", name=name, wait=True)


def _ipv4(inst: dict[str, Any]) -> str:
    net = (inst.get("state") or {}).get("network") or {}
    return "\n".join(f"{a['address']} ({dev})" for dev, n in sorted(net.items())
                     for a in n.get("addresses", []) if a.get("family") == "inet")


COLUMNS = [("NAME", lambda i: i["name"]), ("STATUS", lambda i: i["status"].upper()), ("IPV4", _ipv4),
           ("TYPE", lambda i: "VIRTUAL-MACHINE"), ("LOCATION", lambda i: i.get("location", ""))]


@click.command(name="list")
@click.argument("filter", required=False, default="")
@format_option
@click.pass_obj
def list_(client: Client, filter: str, fmt: str) -> None:
    """List instances (optionally those whose name starts with FILTER)."""
    show(client.call("instances_list", query={"recursion": 2, "filter": filter}), fmt, COLUMNS)


@click.command()
@click.argument("name")
@format_option
@click.pass_obj
def info(client: Client, name: str, fmt: str) -> None:
    """Show an instance: status, limits, devices, addresses, snapshots."""
    inst = client.call("instance_get", name=name, query={"recursion": 1})
    if fmt != "table":
        show(inst, fmt)
        return
    st = inst.get("state") or {}
    cfg = inst["expanded_config"]  # what applies: the profiles' keys under the instance's own
    lines = [f"Name: {inst['name']}", f"Status: {inst['status']}", f"Type: virtual-machine"
             f"{' (software emulation)' if st.get('virtualization') == 'qemu' else ''}",
             f"Location: {inst['location']}", f"Created: {inst['created_at']}",
             f"Image: {cfg.get('volatile.base_image', '')[:12]}",
             f"Profiles: {', '.join(inst['profiles']) or '-'}",
             f"Limits: cpu={cfg.get('limits.cpu', '1')} memory={cfg.get('limits.memory', '1GiB')}",
             "Devices:"]
    for dev, d in sorted(inst["expanded_devices"].items()):
        lines.append(f"  {dev}: " + ", ".join(f"{k}={v}" for k, v in sorted(d.items())))
    if st.get("network"):
        lines.append("Network:")
        for dev, n in sorted(st["network"].items()):
            addrs = ", ".join(a["address"] for a in n.get("addresses", [])) or "-"
            lines.append(f"  {dev}: {n.get('hwaddr', '')} {addrs}")
    if st.get("status") == "Running":
        lines.append(f"Memory: {st['memory']['usage'] // (1 << 20)}MiB  CPU time: "
                     f"{st['cpu']['usage'] / 1e9:.1f}s")
    snaps = inst.get("snapshots") or []
    lines.append("Snapshots: " + (", ".join(s["name"] for s in snaps) or "-"))
    click.echo("\n".join(lines))


@click.group()
def config() -> None:
    """Show or change an instance's configuration."""


@config.command(name="get")
@click.argument("name")
@click.argument("key")
@click.pass_obj
def config_get(client: Client, name: str, key: str) -> None:
    """Print one config value."""
    click.echo(client.call("instance_get", name=name, query={"recursion": 0})["config"].get(key, ""))


@config.command(name="set")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_obj
def config_set(client: Client, name: str, pairs: tuple[str, ...]) -> None:
    """Set config keys (limits.cpu, limits.memory, ...); applied live where possible, else at next start."""
    client.call("instance_patch", name=name, body={"config": _key_values(pairs)})


@config.command(name="unset")
@click.argument("name")
@click.argument("key")
@click.pass_obj
def config_unset(client: Client, name: str, key: str) -> None:
    """Remove a config key (back to its default)."""
    client.call("instance_patch", name=name, body={"config": {key: ""}})


@config.command(name="show")
@click.argument("name")
@click.pass_obj
def config_show(client: Client, name: str) -> None:
    """Print the config, devices and description as YAML."""
    inst = client.call("instance_get", name=name, query={"recursion": 0})
    click.echo(yaml.safe_dump({k: inst[k] for k in ("config", "devices", "profiles", "description")},
                              sort_keys=False).rstrip())


@config.command(name="edit")
@click.argument("name")
@click.pass_obj
def config_edit(client: Client, name: str) -> None:
    """Edit config and devices in $EDITOR (or from stdin when it is not a terminal)."""
    inst = client.call("instance_get", name=name, query={"recursion": 0})
    current = yaml.safe_dump({k: inst[k] for k in ("config", "devices", "profiles", "description")},
                             sort_keys=False)
    if sys.stdin.isatty():
        with tempfile.NamedTemporaryFile("w+", suffix=".yaml") as f:
            f.write(current)
            f.flush()
            subprocess.run([os.environ.get("EDITOR", "vi"), f.name], check=False)
            f.seek(0)
            text = f.read()
    else:
        text = sys.stdin.read()
    try:
        new = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidArgument(f"not valid YAML: {e}") from None
    client.call("instance_put", name=name, body={k: new.get(k) for k in ("config", "devices", "profiles",
                                                                        "description") if k in new},
         wait=True)


@click.command()
@click.argument("name")
@click.option("--show-log", is_flag=True, help="print the console log instead of attaching")
@click.pass_obj
def console(client: Client, name: str, show_log: bool) -> None:
    """Attach to an instance's serial console (Ctrl-a q to detach), or print its log."""
    if show_log:
        envelope_free = _raw(client, f"/1.0/instances/{name}/console")
        click.echo(envelope_free, nl=False)
        return
    asyncio.run(_attach(str(client.path), name))


def _raw(client: Client, path: str) -> str:
    import http.client
    import json
    import socket

    conn = http.client.HTTPConnection("localhost")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(client.path))
    conn.sock = sock
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        try:
            raise MicrocloudError(json.loads(body).get("error", f"HTTP {resp.status}"))
        except ValueError:
            raise MicrocloudError(f"HTTP {resp.status}") from None
    return body.decode(errors="replace")


async def _attach(path: str, name: str) -> None:
    import aiohttp

    url = f"http://localhost/1.0/instances/{name}/console"
    loop = asyncio.get_running_loop()
    tty = sys.stdin.isatty()
    old = None
    if tty:
        import termios
        import tty as ttymod

        old = termios.tcgetattr(sys.stdin.fileno())
        ttymod.setraw(sys.stdin.fileno())
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            try:
                ws = await session.ws_connect(url)
            except aiohttp.WSServerHandshakeError as e:
                raise MicrocloudError(f"cannot attach to the console of {name}: {e.message}") from None
            if tty:
                click.echo("To detach from the console, press: <ctrl>+a q\r")
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            loop.add_reader(sys.stdin.fileno(), lambda: queue.put_nowait(os.read(sys.stdin.fileno(), 1024)))

            async def keys() -> None:
                prev = b""
                while True:
                    data = await queue.get()
                    if not data or (prev == b"\x01" and data == b"q"):
                        await ws.close()
                        return
                    prev = data[-1:]
                    await ws.send_bytes(data)

            sender = asyncio.create_task(keys())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    sys.stdout.buffer.write(msg.data)
                    sys.stdout.buffer.flush()
                else:
                    break
            sender.cancel()
            loop.remove_reader(sys.stdin.fileno())
    finally:
        if old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)


COMMANDS: list[click.Command] = [launch, create, start, stop, restart, delete, list_, info, config, console,
                                 snapshot]
