"""GLM families and links for the GLMM engine, with R's numerical safeguards.

Each link clamps as R's `make.link`/`binomial()` do (logit: eta beyond +-30 gives
mu = eps or 1 - eps and mu'(eta) = eps; probit and cloglog clamp mu into (eps, 1-eps);
log keeps mu >= eps), so near-separated data behave as in glmer. A family gives the
variance function, deviance residuals (lme4's PIRLS objective) and the conditional
log-density with its full constants (binomial log C(n, k), Poisson -log y!), which
the reported log-likelihood uses for every nAGQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
from scipy.special import expit, gammaln, ndtr, ndtri, xlogy

EPS = float(np.finfo(float).eps)
THRESH = 30.0

FAMILY_LINKS = {"binomial": ("logit", "probit", "cloglog"), "poisson": ("log",)}
DEFAULT_LINK = {"binomial": "logit", "poisson": "log", "gaussian": "identity"}


@dataclass(frozen=True)
class Link:
    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]


def _logit_inv(eta: np.ndarray) -> np.ndarray:
    # R's logit_linkinv: eta beyond -+30 gives eps/(1+eps) and 1/(1+eps) (expit there is
    # already within a few eps of those, so clamping eta is enough and cheaper than clipping mu)
    return expit(np.minimum(np.maximum(eta, -THRESH), THRESH))


def _logit_mu_eta(eta: np.ndarray) -> np.ndarray:
    mu = expit(eta)
    out = mu * (1.0 - mu)
    if np.abs(eta).max(initial=0.0) > THRESH:  # R's logit_mu_eta: eps beyond -+30
        out[np.abs(eta) > THRESH] = EPS
    return out


_PROBIT_T = -float(ndtri(EPS))


def _probit_inv(eta: np.ndarray) -> np.ndarray:
    return ndtr(np.clip(eta, -_PROBIT_T, _PROBIT_T))


def _probit_mu_eta(eta: np.ndarray) -> np.ndarray:
    return np.maximum(np.exp(-0.5 * eta * eta) / np.sqrt(2 * np.pi), EPS)


def _cloglog_inv(eta: np.ndarray) -> np.ndarray:
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), EPS, 1.0 - EPS)


def _cloglog_mu_eta(eta: np.ndarray) -> np.ndarray:
    e = np.minimum(eta, 700.0)
    return np.maximum(np.exp(e - np.exp(e)), EPS)


LINKS = {
    "logit": Link("logit", lambda mu: np.log(mu / (1.0 - mu)), _logit_inv, _logit_mu_eta),
    "probit": Link("probit", lambda mu: ndtri(mu), _probit_inv, _probit_mu_eta),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inv, _cloglog_mu_eta),
    "log": Link("log", np.log, lambda eta: np.maximum(np.exp(eta), EPS),
                lambda eta: np.maximum(np.exp(eta), EPS)),
}


class Family:
    """A response distribution: variance, deviance residuals, log-density, start values.

    Responses are stored as lme4 stores them: binomial y is the proportion of successes
    and the prior weights are the numbers of trials; Poisson y is the count.
    """

    name: str

    def __init__(self, link: str | None = None) -> None:
        link = link or DEFAULT_LINK[self.name]
        if link not in FAMILY_LINKS[self.name]:
            raise ValueError(f"link '{link}' is not available for family {self.name} "
                             f"(choose {', '.join(FAMILY_LINKS[self.name])})")
        self.link = LINKS[link]

    def variance(self, mu: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def log_density(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """Per-row log p(y | mu) with every constant (lme4's family aic() is -2 x the sum)."""
        return self.log_constant(y, wt) + self.log_kernel(y, mu, wt)

    def log_constant(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        """The part of log p(y | mu) free of mu (binomial log C(n, k), Poisson -log y!)."""
        raise NotImplementedError

    def log_kernel(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def mustart(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Binomial(Family):
    name = "binomial"

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu * (1.0 - mu)

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2.0 * wt * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))

    def log_constant(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        n, k = np.round(wt), np.round(wt * y)
        return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)

    def log_kernel(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        n, k = np.round(wt), np.round(wt * y)
        return xlogy(k, mu) + xlogy(n - k, 1.0 - mu)

    def mustart(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return (wt * y + 0.5) / (wt + 1.0)


class Poisson(Family):
    name = "poisson"

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return 2.0 * wt * (xlogy(y, y / mu) - (y - mu))

    def log_constant(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return -wt * gammaln(y + 1.0)

    def log_kernel(self, y: np.ndarray, mu: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return wt * (xlogy(y, mu) - mu)

    def mustart(self, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
        return y + 0.1


FAMILIES: dict[str, type[Family]] = {"binomial": Binomial, "poisson": Poisson}


def make_family(name: str, link: str | None = None) -> Family:
    """The family object for a spec's `family`/`link` (ValueError names what is valid)."""
    if name not in FAMILIES:
        raise ValueError(f"family '{name}' has no GLMM engine (choose {', '.join(FAMILIES)})")
    return FAMILIES[name](link)
