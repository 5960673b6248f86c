"""On-boot persistence (`enable-on-boot` / `disable-on-boot`): a systemd unit per endpoint.

As Globus Compute's commands do, enabling writes the unit file and prints the `systemctl`
command that enables it, and disabling prints the commands that undo it: nothing is started
or stopped here, so an admin sees each step that changes the machine. The unit runs the
endpoint in the foreground (systemd supervises it) as the account that enabled it, with the
FNRELAY_HOME it was enabled under, so it finds the same endpoint and credentials.
"""

from __future__ import annotations

import getpass
import sys
import textwrap
from pathlib import Path

from fnrelay.config import fnrelay_home
from fnrelay.errors import ConfigurationError

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")

UNIT_TEMPLATE = """\
[Unit]
Description=fnrelay endpoint "{name}"
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
User={account}
Environment={home}
ExecStart={python} -m fnrelay_endpoint start {name} --foreground
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def service_name(name: str) -> str:
    return f"fnrelay-endpoint-{name}"


def unit_path(name: str, unit_dir: Path) -> Path:
    return unit_dir / f"{service_name(name)}.service"


def require_dir(unit_dir: Path) -> None:
    if not unit_dir.is_dir():
        raise ConfigurationError(
            f"no systemd unit directory at {unit_dir}: on-boot persistence is implemented for "
            "systemd only (pass --unit-dir for another one)")


def quoted(value: str) -> str:
    """`value` as one word of a unit file: quoted, `%` (systemd's specifiers) doubled."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def unit_text(name: str) -> str:
    return UNIT_TEMPLATE.format(name=name, account=getpass.getuser(),
                                home=quoted(f"FNRELAY_HOME={fnrelay_home()}"),
                                python=quoted(sys.executable))


def enable(name: str, unit_dir: Path) -> tuple[Path, str]:
    """Write the unit of endpoint `name`; returns (its path, the command to enable it)."""
    require_dir(unit_dir)
    path, text = unit_path(name, unit_dir), unit_text(name)
    try:
        with path.open("x") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigurationError(
            f"cannot create the systemd unit: {path} already exists") from None
    except PermissionError as e:
        raise ConfigurationError(f"cannot create the systemd unit {path}: {e.strerror} (do you "
                                 "need to be root?)") from None
    return path, f"systemctl enable {service_name(name)} --now"


def disable_commands(name: str, unit_dir: Path) -> str:
    """The commands that stop and remove endpoint `name`'s unit (an error if it has none)."""
    require_dir(unit_dir)
    path = unit_path(name, unit_dir)
    if not path.exists():
        raise ConfigurationError(f"endpoint {name} has no systemd unit ({path} not found)")
    service = service_name(name)
    return textwrap.indent(f"systemctl stop {service}\nsystemctl disable {service}\n"
                           f"rm {path}", "\t")
