"""Simulated students: repeated test scores in classrooms, schools and provinces.

The design of the shipped `students` example (shared/tools/make_students.py), with
sizes, SDs, the classroom intercept-slope correlation and the seed as parameters, so
a spec can check that a model recovers known true values. With the defaults the
output equals the shipped students.csv row for row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runner.spec.models import SimulateSource


def simulate_students(p: SimulateSource) -> pd.DataFrame:
    """Draw the data set; the order of random draws is that of make_students.py."""
    rng = np.random.default_rng(p.seed)
    cov = np.array([
        [p.sd_classroom**2, p.corr_classroom * p.sd_classroom * p.sd_classroom_age],
        [p.corr_classroom * p.sd_classroom * p.sd_classroom_age, p.sd_classroom_age**2],
    ])
    rows: dict[str, list] = {k: [] for k in
                             ("student_id", "classroom", "school", "province", "sex", "age", "test_score")}
    sid = 0
    for prov in range(p.provinces):
        u_p = rng.normal(0, p.sd_province)
        for s in range(p.schools):
            u_s = rng.normal(0, p.sd_school)
            for c in range(p.classrooms):
                b0, b1 = rng.multivariate_normal([0, 0], cov)
                for _ in range(p.students):
                    sid += 1
                    u_i = rng.normal(0, p.sd_student)
                    sex = "M" if rng.random() < 0.5 else "F"
                    age0 = rng.uniform(9.5, 11.5)
                    for o in range(p.scores):
                        age = round(age0 + o, 2)
                        agec = age - 11
                        y = (p.intercept + p.age * agec + (p.sex_m if sex == "M" else 0)
                             + u_p + u_s + b0 + b1 * agec + u_i + rng.normal(0, p.sd_residual))
                        rows["student_id"].append(f"st{sid:05d}")
                        rows["classroom"].append(f"P{prov + 1}S{s + 1}C{c + 1}")
                        rows["school"].append(f"P{prov + 1}S{s + 1}")
                        rows["province"].append(f"P{prov + 1}")
                        rows["sex"].append(sex)
                        rows["age"].append(age)
                        rows["test_score"].append(round(y, 2))
    frame = pd.DataFrame(rows)
    for col in ("student_id", "classroom", "school", "province", "sex"):
        frame[col] = frame[col].astype("str")
    return frame
