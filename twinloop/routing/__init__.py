"""Choosing a domain for each question: rules as data, an embedding router, its evaluation."""

from twinloop.routing.evaluation import RoutingReport, evaluate
from twinloop.routing.router import DomainRouter, RouteResult
from twinloop.routing.rules import InvalidRouterRulesError, RouterRules, default_rules

__all__ = [
    "DomainRouter",
    "InvalidRouterRulesError",
    "RouteResult",
    "RouterRules",
    "RoutingReport",
    "default_rules",
    "evaluate",
]
