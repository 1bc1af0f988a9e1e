"""Runge–Kutta tableaux as exact rationals, defined once; float arrays are derived from them.

Adaptive pairs (:data:`ADAPTIVE_TABLEAUX`): Dormand–Prince 5(4) with Shampine's mid-point weights ("dopri5",
scipy's RK45 with :data:`DOPRI5_SCIPY`), Prince–Dormand 8(7) ("dopri8"), Bogacki–Shampine 3(2) ("bosh3"),
Fehlberg's 2(1) ("fehlberg2"), Heun–Euler 2(1) ("adaptive_heun") and Tsitouras 5(4) ("tsit5"). Fixed-grid methods
(:data:`FIXED_GRID_TABLEAUX`): Euler, the explicit midpoint rule, Kutta's 3/8 rule ("rk4"), Heun's second- and
third-order methods. :func:`order_residuals` checks any tableau exactly against the rooted-tree conditions.

Each adaptive tableau reproduces the step torchdiffeq takes under the same name: ``b`` propagates the solution,
``b − b_low`` weights the error estimate, ``b_mid`` gives the solution at the step's mid-point for the quartic dense
output, and ``order`` is the order its step-size controller assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction as F
from functools import cache, cached_property

import numpy as np


@dataclass(frozen=True, eq=False)  # identity hashing: tableaux are singletons, and hashing Fractions is slow
class Tableau:
    """An explicit Runge–Kutta tableau in exact rational arithmetic.

    ``a`` is the full strictly lower-triangular stage matrix (row ``i`` holds the weights of the stages that
    build stage ``i``), ``b`` the propagated weights, ``c`` the stage nodes. ``b_low`` (embedded weights) and
    ``b_mid`` (weights of the solution at the step's mid-point, for dense output) are optional.

    ``order`` is the order the step-size controller assumes (the exponents 1/order of the step-size update and of
    the initial-step guess) and ``order_low = order − 1`` is what the controllers read, as torchdiffeq does. Both
    are the true orders of ``b`` and ``b_low`` except where a tableau's docstring says otherwise (tsit5).
    """

    name: str
    order: int
    a: tuple[tuple[F, ...], ...]
    b: tuple[F, ...]
    c: tuple[F, ...]
    b_low: tuple[F, ...] | None = None
    order_low: int | None = None
    b_mid: tuple[F, ...] | None = None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def error_weights(self) -> tuple[F, ...]:
        """b − b_low: the weights of the local error estimate ``dt·Σ e_j k_j``."""
        if self.b_low is None:
            raise ValueError(f"tableau {self.name!r} has no embedded method")
        return tuple(x - y for x, y in zip(self.b, self.b_low))

    @cached_property  # the comparison runs on Fractions (tens of µs), and solve asks on every call
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at the propagated solution, so it is the next f0.

        The same test torchdiffeq makes (b's last weight is zero and the last stage row equals b's other weights);
        where it fails, torchdiffeq still hands the last stage on as f1, which is then not f(t1, y1).
        """
        return self.b[-1] == 0 and self.a[-1][: self.stages - 1] == self.b[: self.stages - 1]


def _lower(rows: list[list[F]], stages: int) -> tuple[tuple[F, ...], ...]:
    """Pad ragged lower-triangular rows (stage 2 onwards) into a full ``stages × stages`` matrix."""
    full = [[F(0)] * stages]
    for row in rows:
        full.append(list(row) + [F(0)] * (stages - len(row)))
    return tuple(tuple(r) for r in full)


DOPRI5 = Tableau(
    name="dopri5",
    order=5,
    c=(F(0), F(1, 5), F(3, 10), F(4, 5), F(8, 9), F(1), F(1)),
    a=_lower(
        [
            [F(1, 5)],
            [F(3, 40), F(9, 40)],
            [F(44, 45), F(-56, 15), F(32, 9)],
            [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
            [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
            [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
        ],
        7,
    ),
    b=(F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)),
    # torchdiffeq's embedded 4th-order weights (Shampine 1986); scipy's RK45 uses DOPRI5_SCIPY's below.
    b_low=(F(1951, 21600), F(0), F(22642, 50085), F(451, 720), F(-12231, 42400), F(649, 6300), F(1, 60)),
    order_low=4,
    # Shampine (1986): the solution at the mid-point of the step, used by the quartic dense output.
    b_mid=tuple(
        F(1, 2) * w
        for w in (
            F(6025192743, 30085553152),
            F(0),
            F(51252292925, 65400821598),
            F(-2691868925, 45128329728),
            F(187940372067, 1594534317056),
            F(-1776094331, 19743644256),
            F(11237099, 235043384),
        )
    ),
)

# The same pair with Dormand & Prince's (1980) original embedded weights, as in Hairer's DOPRI5 and scipy's RK45.
DOPRI5_SCIPY = replace(
    DOPRI5,
    name="dopri5-scipy",
    b_low=(F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)),
)

EULER = Tableau(name="euler", order=1, c=(F(0),), a=((F(0),),), b=(F(1),))

MIDPOINT = Tableau(name="midpoint", order=2, c=(F(0), F(1, 2)), a=_lower([[F(1, 2)]], 2), b=(F(0), F(1)))

# torchdiffeq's "rk4" is Kutta's 3/8 rule (its rk4_alt_step_func), not the classic 1/6-1/3 rule.
RK4 = Tableau(
    name="rk4",
    order=4,
    c=(F(0), F(1, 3), F(2, 3), F(1)),
    a=_lower([[F(1, 3)], [F(-1, 3), F(1)], [F(1), F(-1), F(1)]], 4),
    b=(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
)

# Heun's second-order method (the explicit trapezoidal rule): an Euler predictor, then the mean of both slopes.
HEUN2 = Tableau(name="heun2", order=2, c=(F(0), F(1)), a=_lower([[F(1)]], 2), b=(F(1, 2), F(1, 2)))

# Heun's third-order method: stages at 1/3 and 2/3 (the second built from the first alone), weights 1/4, 0, 3/4.
HEUN3 = Tableau(
    name="heun3",
    order=3,
    c=(F(0), F(1, 3), F(2, 3)),
    a=_lower([[F(1, 3)], [F(0), F(2, 3)]], 3),
    b=(F(1, 4), F(0), F(3, 4)),
)

FIXED_GRID_TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, RK4, HEUN2, HEUN3)}


# --- Low-order adaptive pairs ----------------------------------------------------------------------------------

# Heun–Euler 2(1): Heun's method propagates; the Euler predictor's stage, re-evaluated at t1, gives the first-order
# estimate b_low = (0, 1). Not FSAL: the last stage is f at the Euler predictor, not at y1. Its mid-point weights
# are half an Euler step, y(t0 + dt/2) to first order only.
ADAPTIVE_HEUN = Tableau(
    name="adaptive_heun",
    order=2,
    c=(F(0), F(1)),
    a=_lower([[F(1)]], 2),
    b=(F(1, 2), F(1, 2)),
    b_low=(F(0), F(1)),
    order_low=1,
    b_mid=(F(1, 2), F(0)),
)

# Fehlberg (1969), RK1(2): the third stage is f at the first-order solution (1/256, 255/256). torchdiffeq propagates
# the second-order weights (1/512, 255/256, 1/512), so the pair is not FSAL in the sense it tests. Mid-point
# weights: the stage at c = 1/2 times dt/2, y(t0 + dt/2) to first order only.
FEHLBERG2 = Tableau(
    name="fehlberg2",
    order=2,
    c=(F(0), F(1, 2), F(1)),
    a=_lower([[F(1, 2)], [F(1, 256), F(255, 256)]], 3),
    b=(F(1, 512), F(255, 256), F(1, 512)),
    b_low=(F(1, 256), F(255, 256), F(0)),
    order_low=1,
    b_mid=(F(0), F(1, 2), F(0)),
)

# Bogacki & Shampine (1989), 3(2), FSAL. Mid-point weights: the stage at c = 1/2 times dt/2 (first order only).
BOSH3 = Tableau(
    name="bosh3",
    order=3,
    c=(F(0), F(1, 2), F(3, 4), F(1)),
    a=_lower([[F(1, 2)], [F(0), F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]], 4),
    b=(F(2, 9), F(1, 3), F(4, 9), F(0)),
    b_low=(F(7, 24), F(1, 4), F(1, 3), F(1, 8)),
    order_low=2,
    b_mid=(F(0), F(1, 2), F(0), F(0)),
)


# --- Prince & Dormand (1981), RK8(7)13M ------------------------------------------------------------------------

# The 13 stages of the pair plus a 14th, f(t1, y1), appended so that the step is FSAL (torchdiffeq's layout: its
# last stage row equals b, and the dense output below uses that stage). The coefficients are Prince & Dormand's
# published rationals, stored exactly; they are rational approximations (about 18 significant digits) of an exact
# solution of the order conditions, so the row sums c_i = Σ_j a_ij and the order conditions hold to about 1e-17,
# not exactly (rows 6–13 miss by 3e-19 to 1e-17).
_DOPRI8_C = (
    F(0), F(1, 18), F(1, 12), F(1, 8), F(5, 16), F(3, 8), F(59, 400), F(93, 200), F(5490023248, 9719169821),
    F(13, 20), F(1201146811, 1299019798), F(1), F(1), F(1),
)
_DOPRI8_B = (
    F(14005451, 335480064), F(0), F(0), F(0), F(0), F(-59238493, 1068277825), F(181606767, 758867731),
    F(561292985, 797845732), F(-1041891430, 1371343529), F(760417239, 1151165299), F(118820643, 751138087),
    F(-528747749, 2220607170), F(1, 4), F(0),
)
_DOPRI8_B7 = (
    F(13451932, 455176623), F(0), F(0), F(0), F(0), F(-808719846, 976000145), F(1757004468, 5645159321),
    F(656045339, 265891186), F(-3867574721, 1518517206), F(465885868, 322736535), F(53011238, 667516719),
    F(2, 45), F(0), F(0),
)
_DOPRI8_A = _lower(
    [
        [F(1, 18)],
        [F(1, 48), F(1, 16)],
        [F(1, 32), F(0), F(3, 32)],
        [F(5, 16), F(0), F(-75, 64), F(75, 64)],
        [F(3, 80), F(0), F(0), F(3, 16), F(3, 20)],
        [F(29443841, 614563906), F(0), F(0), F(77736538, 692538347), F(-28693883, 1125000000),
         F(23124283, 1800000000)],
        [F(16016141, 946692911), F(0), F(0), F(61564180, 158732637), F(22789713, 633445777),
         F(545815736, 2771057229), F(-180193667, 1043307555)],
        [F(39632708, 573591083), F(0), F(0), F(-433636366, 683701615), F(-421739975, 2616292301),
         F(100302831, 723423059), F(790204164, 839813087), F(800635310, 3783071287)],
        [F(246121993, 1340847787), F(0), F(0), F(-37695042795, 15268766246), F(-309121744, 1061227803),
         F(-12992083, 490766935), F(6005943493, 2108947869), F(393006217, 1396673457), F(123872331, 1001029789)],
        [F(-1028468189, 846180014), F(0), F(0), F(8478235783, 508512852), F(1311729495, 1432422823),
         F(-10304129995, 1701304382), F(-48777925059, 3047939560), F(15336726248, 1032824649),
         F(-45442868181, 3398467696), F(3065993473, 597172653)],
        [F(185892177, 718116043), F(0), F(0), F(-3185094517, 667107341), F(-477755414, 1098053517),
         F(-703635378, 230739211), F(5731566787, 1027545527), F(5232866602, 850066563),
         F(-4093664535, 808688257), F(3962137247, 1805957418), F(65686358, 487910083)],
        [F(403863854, 491063109), F(0), F(0), F(-5068492393, 434740067), F(-411421997, 543043805),
         F(652783627, 914296604), F(11173962825, 925320556), F(-13158990841, 6184727034),
         F(3936647629, 1978049680), F(-160528059, 685178525), F(248638103, 1413531060), F(0)],
        list(_DOPRI8_B[:13]),  # stage 14 = f(t1, y1)
    ],
    14,
)

# The dense output torchdiffeq pairs with this method: b_j(θ) = Σ_k p_jk θ^k for k = 6 … 1, with the p_jk given as
# 20-digit decimals (stored exactly as those decimals); stages 1–4 have b_j(θ) = 0. Only θ = 1/2 is used.
_DOPRI8_DENSE = {
    0: ("-6.3448349392860401388", "22.1396504998094068976", "-30.0610568289666450593", "19.9990069333683970610",
        "-6.6910181737837595697", "1"),
    5: ("-39.6107919852202505218", "116.4422149550342161651", "-121.4999627731334642623",
        "52.2273532792945524050", "-7.6142658045872677172", "0"),
    6: ("20.3761213808791436958", "-67.1451318825957197185", "83.1721004639847717481", "-46.8919164181093621583",
        "10.7281392630428866124", "0"),
    7: ("7.3347098826795362023", "-16.5672243527496524646", "9.5724507555993664382", "-0.1890893225010595467",
        "0.5526637063753648783", "0"),
    8: ("32.8801774352459155182", "-89.9916014847245016028", "87.8406057677205645007", "-35.7075975946222072821",
        "4.2186562625665153803", "0"),
    9: ("-10.1588990526426760954", "22.6237489648532849093", "-17.4152107770762969005", "6.2736448083240352160",
        "-0.6627209125361597559", "0"),
    10: ("-12.5401268098782561200", "32.2362340167355370113", "-28.5903289514790976966",
         "10.3160881272450748458", "-1.2636789001135462218", "0"),
    11: ("29.5553001484516038033", "-82.1020315488359848644", "81.6630950584341412934", "-34.7650769866611817349",
         "5.4106037898590422230", "0"),
    12: ("-41.7923486424390588923", "116.2662185791119533462", "-114.9375291377009418170",
         "47.7457971078225540396", "-7.0321379067945741781", "0"),
    13: ("20.3006925822100825485", "-53.9020777466385396792", "50.2558364226176017553", "-19.0082099341608028453",
         "2.3537586759714983486", "0"),
}


def _dopri8_dense(theta: F) -> tuple[F, ...]:
    """b_j(θ) of :data:`_DOPRI8_DENSE`, exactly."""
    return tuple(
        sum((F(p) * theta ** (6 - k) for k, p in enumerate(_DOPRI8_DENSE[j])), F(0)) if j in _DOPRI8_DENSE else F(0)
        for j in range(14)
    )


DOPRI8 = Tableau(
    name="dopri8",
    order=8,
    c=_DOPRI8_C,
    a=_DOPRI8_A,
    b=_DOPRI8_B,
    b_low=_DOPRI8_B7,
    order_low=7,
    b_mid=_dopri8_dense(F(1, 2)),
)


# --- Tsitouras (2011), 5(4) ------------------------------------------------------------------------------------

# Tsitouras's coefficients solve the order conditions numerically and are known only as (here 78–90 digit)
# decimals; they are stored as exactly those decimals, so the order conditions hold only to about 1e-77. The
# nodes are his (0.161, 0.327, 0.9, c5, 1, 1) and each a_i1 is derived as c_i − Σ_{j>1} a_ij so that the row sums
# hold exactly. His 7th stage row is the fifth-order solution (FSAL) and b̂ = that row − e is the fourth-order one.
#
# torchdiffeq's tsit5 propagates the fourth-order weights b̂ (whose last entry is 1/66) and estimates the error
# with e against the fifth-order row, so here b = b̂ has order 4 and b_low (= b − e, which equals the last stage
# row to the decimals' precision) has order 5. ``order = 5`` and ``order_low = 4`` are what its step-size control
# uses, not the orders of b and b_low. The step is not FSAL: torchdiffeq hands on the last stage, f at the
# fifth-order solution, as f1. :data:`TSIT5_PAPER` is the method as published (b of order 5, FSAL).
_TSIT5_C = (F(0), F(161, 1000), F(327, 1000), F(9, 10),
            F("0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604"), F(1), F(1))
_TSIT5_A_REST = (  # a_ij for j ≥ 2, rows 3–7 (row 2 is a_21 = c_2 alone)
    ("0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569",),
    ("-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366",
     "4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077"),
    ("-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589",
     "7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753",
     "-0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635"),
    ("-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452",
     "8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986",
     "-0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835",
     "-0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206"),
    ("0.01",
     "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509",
     "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331",
     "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677",
     "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841"),
)


def _tsit5_rows() -> list[list[F]]:
    rows = [[_TSIT5_C[1]]]
    for i, rest in enumerate(_TSIT5_A_REST, start=2):
        tail = [F(x) for x in rest]
        rows.append([_TSIT5_C[i] - sum(tail, F(0)), *tail])
    return rows


_TSIT5_B4 = (  # the fourth-order weights b̂
    F("0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271"),
    F("0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270"),
    F("0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813"),
    F("1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761"),
    F("-2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702"),
    F("1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089"),
    F(1, 66),
)
_TSIT5_E = (  # the error weights: b̂ minus the fifth-order weights
    F("-0.001780011052225771443378550607539534775944678804333659557637450799792588061629796"),
    F("-0.0008164344596567469032236360633546862401862537590159047610940604670770447527463931"),
    F("0.007880878010261996010314727672526304238628733777103128603258129604952959142646516"),
    F("-0.144711007173262907537165147972635116720922712343167677619514233896760819649515"),
    F("0.5823571654525552250199376106520421794260781239567387797673045438803694038950012"),
    F("-0.4580821059291869466616365188325542974428047279788398179474684434732070620889539"),
    F(1, 66),
)


# The root of b_1(θ) torchdiffeq uses, 1.329989018975412, drops a digit of Tsitouras's 1.3299890189751412: its
# mid-point weights therefore sum to 1/2 only within 4e-14 (all other conditions hold to the constants' 17 digits).
_TSIT5_B1_ROOT = F("1.329989018975412")


def _tsit5_dense(theta: F, b1_root: F = _TSIT5_B1_ROOT) -> tuple[F, ...]:
    """Tsitouras's continuous extension b_j(θ) (his factored form, constants to about 17 digits), exactly."""
    x = theta
    return (
        F("-1.0530884977290216") * x * (x - b1_root)
        * (x * x - F("1.4364028541716351") * x + F("0.7139816917074209")),
        F("0.1017") * x * x * (x * x - F("2.1966568338249754") * x + F("1.2949852507374631")),
        F("2.490627285651252793") * x * x * (x * x - F("2.38535645472061657") * x + F("1.57803468208092486")),
        F("-16.54810288924490272") * (x - F("1.21712927295533244")) * (x - F("0.61620406037800089")) * x * x,
        F("47.37952196281928122") * (x - F("1.203071208372362603")) * (x - F("0.658047292653547382")) * x * x,
        F("-34.87065786149660974") * (x - F("1.2")) * (x - F(2, 3)) * x * x,
        F("2.5") * (x - 1) * (x - F("0.6")) * x * x,
    )


TSIT5 = Tableau(
    name="tsit5",
    order=5,
    c=_TSIT5_C,
    a=_lower(_tsit5_rows(), 7),
    b=_TSIT5_B4,
    b_low=tuple(x - e for x, e in zip(_TSIT5_B4, _TSIT5_E)),
    order_low=4,
    b_mid=_tsit5_dense(F(1, 2)),
)

# Tsitouras's method as published: the fifth-order last stage row propagates (FSAL), b̂ is the embedded estimate.
TSIT5_PAPER = replace(TSIT5, name="tsit5-paper", b=(*TSIT5.a[-1][:6], F(0)), b_low=_TSIT5_B4)

ADAPTIVE_TABLEAUX = {t.name: t for t in (DOPRI5, DOPRI8, BOSH3, FEHLBERG2, ADAPTIVE_HEUN, TSIT5)}

# Quartic dense output on one step, in the basis [y0, y1, y_mid, dt·f0, dt·f1]: row k holds the coefficient of
# x**k, x = (t − t0)/dt. It is the unique quartic with p(0) = y0, p(1) = y1, p(1/2) = y_mid, p'(0) = dt·f0,
# p'(1) = dt·f1 (torchdiffeq's _interp_fit).
INTERP_BASIS = ("y0", "y1", "y_mid", "dt_f0", "dt_f1")
INTERP_FIT = (
    (F(1), F(0), F(0), F(0), F(0)),
    (F(0), F(0), F(0), F(1), F(0)),
    (F(-11), F(-5), F(16), F(-4), F(1)),
    (F(18), F(14), F(-32), F(5), F(-3)),
    (F(-8), F(-8), F(16), F(-2), F(2)),
)


def as_float(values) -> np.ndarray:
    """Nested Fractions → float64 array (each entry rounded once, from the exact rational)."""
    return np.array([[float(x) for x in row] for row in values] if isinstance(values[0], tuple) else
                    [float(x) for x in values], dtype=np.float64)


@dataclass(frozen=True)
class FloatTableau:
    """The float64 arrays the kernels use, derived from a :class:`Tableau`."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    e: np.ndarray
    b_mid: np.ndarray


@cache
def float_tableau(tableau: Tableau) -> FloatTableau:
    empty = np.zeros(tableau.stages)
    return FloatTableau(
        a=as_float(tableau.a),
        b=as_float(tableau.b),
        c=as_float(tableau.c),
        e=as_float(tableau.error_weights) if tableau.b_low is not None else empty,
        b_mid=as_float(tableau.b_mid) if tableau.b_mid is not None else empty,
    )


INTERP_FIT_FLOAT = as_float(INTERP_FIT)


# --- Order conditions (Butcher's rooted trees) -----------------------------------------------------------------

Tree = tuple  # a rooted tree is the sorted tuple of its children's trees; () is the single node


@cache
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with ``order`` nodes (1, 1, 2, 4, 9, 20, … of them)."""
    if order == 1:
        return ((),)
    return tuple(sorted(_forests(order - 1)))


@cache
def _forests(nodes: int) -> frozenset:
    """Every multiset of trees with ``nodes`` nodes in total, each as a sorted tuple (its canonical form)."""
    if nodes == 0:
        return frozenset({()})
    return frozenset(
        tuple(sorted((child, *rest)))
        for size in range(1, nodes + 1)
        for child in rooted_trees(size)
        for rest in _forests(nodes - size)
    )


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def tree_density(tree: Tree) -> int:
    """γ(t) = |t| · Π γ(children)."""
    gamma = tree_order(tree)
    for child in tree:
        gamma *= tree_density(child)
    return gamma


def elementary_weights(a, tree: Tree, memo: dict | None = None) -> list[F]:
    """Φ_i(t) for every stage i: the product over children u of Σ_j a_ij Φ_j(u).

    ``memo`` (keyed by tree) shares the subtrees' weights between calls on the same ``a``: the trees up to order
    8 or 9 have few distinct subtrees, and recomputing them is what makes large tableaux slow in Fractions.
    """
    if memo is not None and tree in memo:
        return memo[tree]
    stages = len(a)
    phi = [F(1)] * stages
    for child in tree:
        inner = elementary_weights(a, child, memo)
        for i in range(stages):
            phi[i] *= sum((a[i][j] * inner[j] for j in range(i)), F(0))  # explicit: a_ij = 0 for j ≥ i
    if memo is not None:
        memo[tree] = phi
    return phi


def order_residuals(a, b, order: int, theta: F = F(1)) -> dict[Tree, F]:
    """Σ_i b_i Φ_i(t) − θ^|t|/γ(t) for every tree with at most ``order`` nodes; all zero iff order ≥ ``order``.

    θ = 1 gives the order conditions of a step; θ < 1 those of a continuous extension whose weights ``b`` give
    the solution at t0 + θ·dt.
    """
    residuals = {}
    memo: dict = {}
    for n in range(1, order + 1):
        for tree in rooted_trees(n):
            phi = elementary_weights(a, tree, memo)
            residuals[tree] = sum((bi * p for bi, p in zip(b, phi)), F(0)) - theta**n / tree_density(tree)
    return residuals
