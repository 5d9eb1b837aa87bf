"""Model routing: several packaged models resident at once, one chosen per instance.

Rules come from the configuration's ``[[routing]]`` tables (:class:`~sswe_node.config.RoutingRule`):
each names a model and conditions on the called AE title, the calling AE title, Body Part
Examined and Manufacturer (case-insensitive; a list means any of them; no condition means
any). The first rule whose conditions all hold wins; when none does, ``model.unmatched``
decides: ``"default"`` gives ``model.name``, ``"skip"`` skips the instance
(reason :data:`NO_MODEL`). Every model a rule names, and the default, is loaded at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from sswe_node.config import RoutingRule, Settings

__all__ = ["NO_MODEL", "InstanceKeys", "ModelRouter", "choose_model", "instance_keys"]

logger = logging.getLogger(__name__)

#: Reason of an instance that no routing rule matched (with ``model.unmatched = "skip"``).
NO_MODEL = "no-model-for-instance"


@dataclass(frozen=True)
class InstanceKeys:
    """What routing rules look at, for one instance."""

    called_ae: str = ""
    calling_ae: str = ""
    body_part: str = ""
    manufacturer: str = ""


def instance_keys(ds: Dataset, called_ae: str = "", calling_ae: str = "") -> InstanceKeys:
    """Return the routing keys of a received instance."""
    return InstanceKeys(
        called_ae=called_ae.strip(),
        calling_ae=calling_ae.strip(),
        body_part=str(ds.get("BodyPartExamined", "") or "").strip(),
        manufacturer=str(ds.get("Manufacturer", "") or "").strip(),
    )


def _matches(condition: Iterable[str], value: str) -> bool:
    wanted = [c.strip().upper() for c in ([condition] if isinstance(condition, str) else condition)]
    wanted = [c for c in wanted if c]
    return not wanted or value.strip().upper() in wanted


def choose_model(
    rules: Sequence[RoutingRule], keys: InstanceKeys, default: str, unmatched: str = "default"
) -> str | None:
    """Return the model name for an instance, or ``None`` when it is to be skipped.

    Parameters
    ----------
    rules : sequence of RoutingRule
        In order; the first whose conditions all hold wins.
    keys : InstanceKeys
        The instance's called/calling AE titles, body part and manufacturer.
    default : str
        The default model (``model.name``).
    unmatched : str
        ``"default"`` or ``"skip"``: what an instance no rule matches gets.
    """
    for rule in rules:
        if (
            _matches(rule.called_ae, keys.called_ae)
            and _matches(rule.calling_ae, keys.calling_ae)
            and _matches(rule.body_part, keys.body_part)
            and _matches(rule.manufacturer, keys.manufacturer)
        ):
            return rule.model
    return default if unmatched == "default" else None


class ModelRouter:
    """The resident models and the rules choosing between them.

    Parameters
    ----------
    models : dict of str to model
        Loaded models by the name rules use.
    settings : Settings
        ``model.name`` (default), ``model.unmatched`` and ``routing``.
    """

    def __init__(self, models: dict[str, Any], settings: Settings) -> None:
        self.models = dict(models)
        self.rules = list(settings.routing)
        self.default = settings.model.name
        self.unmatched = settings.model.unmatched

    @classmethod
    def single(cls, model: Any, settings: Settings) -> ModelRouter:
        """Return a router holding one model (no rules): every instance goes to it."""
        router = cls({settings.model.name: model}, settings)
        router.rules = []
        router.unmatched = "default"
        return router

    @classmethod
    def load(cls, settings: Settings, loader: Callable[[str], Any]) -> ModelRouter:
        """Load the default model and every model a rule names (each once)."""
        names = list(dict.fromkeys([settings.model.name, *(r.model for r in settings.routing)]))
        return cls({name: loader(name) for name in names}, settings)

    @property
    def manifest(self) -> Any:
        """The default model's manifest."""
        return self.models[self.default].manifest

    def route(self, ds: Dataset, called_ae: str = "", calling_ae: str = "") -> str | None:
        """Return the name of the model for an instance, or ``None`` to skip it."""
        name = choose_model(
            self.rules, instance_keys(ds, called_ae, calling_ae), self.default, self.unmatched
        )
        if name is not None and name not in self.models:
            logger.error("event=routing-unknown-model model=%s", name)
            return None
        return name
