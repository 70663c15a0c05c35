"""--config and --json wherever the help shows them, and command groups run without an action."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import build_parser
from tests.conftest import config_dict, write_toml


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _groups() -> list[tuple[str, str, list[str], bool]]:
    """(group, action, placeholder positionals, whether the action itself takes --config) for every action."""
    found = []
    for group, group_parser in _subcommands(build_parser()).items():
        for action, parser in _subcommands(group_parser).items():
            positionals = ["1" for a in parser._actions if not a.option_strings]
            takes_config = any("--config" in a.option_strings for a in parser._actions)
            found.append((group, action, positionals, takes_config))
    return found


GROUP_ACTIONS = _groups()


def test_every_group_with_actions_is_covered():
    groups = {g for g, *_ in GROUP_ACTIONS}
    expected = {"keys", "smtp-credentials", "queue", "domains", "dkim", "bounces", "suppressions", "allowlist"}
    assert expected | {"users"} <= groups


@pytest.mark.parametrize(("group", "action", "positionals", "takes_config"), GROUP_ACTIONS)
def test_config_and_json_are_honoured_before_and_after_the_action(group, action, positionals, takes_config):
    parser = build_parser()
    before = parser.parse_args([group, "--config", "before.toml", "--json", action, *positionals])
    assert (before.config, before.json) == ("before.toml", True)
    plain = parser.parse_args([group, action, *positionals])
    assert (plain.config, plain.json) == (None, False)
    top = parser.parse_args(["--config", "top.toml", "--json", group, action, *positionals])
    assert (top.config, top.json) == ("top.toml", True)  # relay --config FILE group action
    if takes_config:
        after = parser.parse_args([group, action, *positionals, "--config", "after.toml", "--json"])
        assert (after.config, after.json) == ("after.toml", True)
        # Given at both levels, the action's copy wins (it is parsed last).
        both = parser.parse_args([group, "--config", "group.toml", action, *positionals, "--config", "action.toml"])
        assert both.config == "action.toml"


@pytest.mark.parametrize("command", sorted(_subcommands(build_parser())))
def test_config_before_the_command_is_that_commands_config(command):
    """``relay --config /etc/relay/relay.toml queue``: where postconf -c and nginx -c put theirs."""
    parser = build_parser()
    command_parser = _subcommands(parser)[command]
    actions = _subcommands(command_parser)
    words = [command]
    if actions:
        action, command_parser = next(iter(actions.items()))
        words.append(action)
    for argument in command_parser._actions:  # placeholders for what the command requires
        if not argument.option_strings and not isinstance(argument, argparse._SubParsersAction):
            words.append("1")
        elif argument.required:
            words += [argument.option_strings[0], "1"]
    assert parser.parse_args(["--config", "top.toml", *words]).config == "top.toml"
    if any("--config" in a.option_strings for a in command_parser._actions):
        again = parser.parse_args(["--config", "top.toml", *words, "--config", "last.toml"])
        assert again.config == "last.toml"  # the last one given wins


def relay_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_a_group_option_before_the_action_picks_the_config_not_the_default_file(tmp_path):
    """``relay keys --config other.toml create`` must not write to what ./config/relay.toml points at."""
    (tmp_path / "config").mkdir()
    write_toml(tmp_path / "config" / "relay.toml", config_dict(tmp_path / "default-data"))
    other = write_toml(tmp_path / "other.toml", config_dict(tmp_path / "other-data"))

    created = relay_cli("keys", "--config", str(other), "--json", "create", "--name", "other-key", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "other-key"  # --json before the action was honoured

    in_default = json.loads(relay_cli("keys", "list", "--json", cwd=tmp_path).stdout)
    in_other = json.loads(relay_cli("keys", "list", "--json", "--config", str(other), cwd=tmp_path).stdout)
    assert in_default == [] and [k["name"] for k in in_other] == ["other-key"]

    top = relay_cli("--config", str(other), "--json", "keys", "list", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    assert [k["name"] for k in json.loads(top.stdout)] == ["other-key"]

    queue = relay_cli("queue", "--config", str(other), "--json", "domains", cwd=tmp_path)
    assert queue.returncode == 0 and json.loads(queue.stdout) == []
    purge = relay_cli("queue", "--config", str(other), "--json", "purge", "--all", cwd=tmp_path)
    assert purge.returncode == 0 and json.loads(purge.stdout) == {"purged": 0}


@pytest.mark.parametrize("group", sorted({g for g, *_ in GROUP_ACTIONS} - {"queue"}))
def test_a_group_without_its_action_prints_its_own_help(group, tmp_path):
    result = relay_cli(group, cwd=tmp_path)  # no config file here: the help needs none
    assert result.returncode == 2
    assert f"usage: relay {group} " in result.stdout and "ACTION" in result.stdout
    assert "Traceback" not in result.stderr
    for action in (a for g, a, *_ in GROUP_ACTIONS if g == group):
        assert action in result.stdout


def test_queue_without_an_action_shows_the_counts(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    result = relay_cli("queue", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0 and "recipients by state" in result.stdout
