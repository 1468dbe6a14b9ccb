"""The screen on answers to conversations (HealthBench's prompts), where the hedge check is off for a rubric row
with no reference: what it would stop of good answers, and what of hedging answers is left to the rubric's pitfalls.

    .venv/bin/python bench/bench_rubric_screen.py

A generated probe set, seeded and larger than one could tune by hand: good answers to ten patient questions (a
committed lead, advice, the conditions or options that change it, a safety net) and hedging answers to the same
questions (candidate causes and opposite actions side by side, committing to nothing). Half A was looked at while
writing the generator; half B is reported. Each answer is screened with the hedge check on (as for a reference row)
and off (as the kit screens a rubric row without a reference). Nothing here is tuned: the figures say what the
choice costs and what it leaves to the rubric's pitfalls and the judge.
"""

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

# (question, committed lead, advice, conditions or options that change it, candidate causes, opposite actions)
TOPICS = [
    ("My father suddenly can't lift his right arm and his speech is slurred. What should I do?",
     ["This sounds like a stroke", "These are warning signs of a stroke"], ["call an ambulance now", "call emergency services right away"],
     ["a clot", "a bleed", "a mini-stroke (TIA)"], ["a stroke", "a pinched nerve", "low blood sugar", "tiredness"],
     ["call an ambulance", "let him sleep it off"]),
    ("I have had a runny nose and a sore throat for three days, no fever. Do I need antibiotics?",
     ["Probably not", "Most likely you do not"], ["rest, drink fluids and use paracetamol for the pain"],
     ["a high fever", "trouble breathing", "symptoms past ten days", "a rash"], ["a cold", "strep throat", "flu", "allergies"],
     ["take antibiotics", "wait it out"]),
    ("Can I take ibuprofen for my back pain?",
     ["Usually yes, for a few days", "For most adults, yes"], ["take the lowest dose that works, with food"],
     ["stomach ulcers", "kidney disease", "heart failure", "pregnancy", "blood thinners"], ["a muscle strain", "a slipped disc", "a kidney stone"],
     ["take ibuprofen", "avoid it completely"]),
    ("My 2-year-old swallowed a button battery ten minutes ago. She seems fine. What should I do?",
     ["Go to the emergency department now", "She needs to be seen in hospital now"], ["do not wait for symptoms and do not make her vomit"],
     ["honey on the way if she is over one", "bring the battery packet"], ["nothing serious", "a burn in the food pipe", "a blocked airway"],
     ["go to hospital", "watch her stool at home"]),
    ("I'm 34 weeks pregnant with a bad headache and blurry vision since this morning. Is this normal?",
     ["This is not something to wait on", "This can be a sign of pre-eclampsia"], ["call your maternity unit or go to hospital today"],
     ["high blood pressure", "protein in the urine", "swelling of the face or hands"], ["tiredness", "a migraine", "pre-eclampsia", "dehydration"],
     ["go to hospital", "rest at home"]),
    ("What is a normal resting heart rate for an adult?",
     ["Between 60 and 100 beats per minute", "For most adults 60 to 100 a minute"], ["measure it after sitting quietly for five minutes"],
     ["athletes", "beta blockers", "fever", "anxiety"], ["50", "70", "90", "110"], ["see a doctor", "ignore it"]),
    ("How do I make oral rehydration solution at home if I have no sachets?",
     ["Mix six level teaspoons of sugar and half a teaspoon of salt in one litre of clean water"], ["give small, frequent sips"],
     ["boiled and cooled water", "a child who cannot drink", "blood in the stool"], ["sugar water", "salt water", "juice", "tea"],
     ["add more salt", "add less salt"]),
    ("In a clinic with no laboratory, how should a child with fast breathing and cough be managed?",
     ["Treat it as pneumonia", "This is pneumonia until shown otherwise"], ["give oral amoxicillin and review in two days"],
     ["chest indrawing", "being unable to drink", "convulsions", "a low oxygen level"], ["pneumonia", "asthma", "a cold", "malaria"],
     ["give antibiotics", "send them home"]),
    ("Is it safe to keep taking metformin before a CT scan with contrast?",
     ["It depends on your kidney function", "Usually yes, if your kidneys work well"], ["ask the radiology team what they advise"],
     ["a low eGFR", "recent kidney injury", "dehydration"], ["safe", "unsafe", "sometimes safe"], ["keep taking it", "stop it for a week"]),
    ("Why do we check potassium before giving IV insulin in DKA?",
     ["Because insulin moves potassium into cells", "Insulin drives potassium into the cells"], ["replace potassium first when it is low"],
     ["a level below 3.3 mmol/L", "ECG changes", "poor urine output"], ["low potassium", "high potassium", "normal potassium"],
     ["give insulin", "hold insulin"]),
]


def some_of(rng, things: list[str]) -> str:
    """Two to four of `things`, as a list in words: "a, b or c"."""
    picked = rng.sample(things, k=min(len(things), rng.randint(2, 4)))
    return ", ".join(picked[:-1]) + f" or {picked[-1]}"


def good(rng, topic) -> str:
    _, leads, advice, conditions, _, _ = topic
    listed = some_of(rng, conditions)
    net = rng.choice(["See a doctor if it gets worse.", "Seek help at once if new symptoms appear.", ""])
    return f"{rng.choice(leads)}: {rng.choice(advice)}. It changes with {listed}. {net}".strip()


def hedging(rng, topic) -> str:
    _, _, _, _, causes, actions = topic
    listed = some_of(rng, causes)
    first, second = rng.sample(actions, 2)
    form = rng.choice([f"It could be {listed}. You could {first}, or {second}.",
                       f"Possibly {listed}; either {first} or {second} may be right.",
                       f"It might be {listed}. {first.capitalize()} or {second}: both are reasonable."])
    return form


def main():
    from kit.screen import SCREENS, screen

    rng = random.Random(20261207)
    probes = [(kind, topic[0], make(rng, topic)) for _ in range(12) for topic in TOPICS
              for kind, make in (("good", good), ("hedging", hedging))]
    rng.shuffle(probes)
    half = len(probes) // 2
    off = tuple(c for c in SCREENS if c != "hedge")
    print(f"{len(probes)} generated answers to {len(TOPICS)} questions ({half} looked at while writing, {len(probes) - half} reported)")
    print("| half | kind | n | stopped, hedge check on | of them as hedge | stopped, hedge check off (a rubric row without a reference) |")
    print("|---|---|---|---|---|---|")
    for name, part in (("A (looked at)", probes[:half]), ("B (reported)", probes[half:])):
        for kind in ("good", "hedging"):
            rows = [(q, a) for k, q, a in part if k == kind]
            on = [screen(a, q, "", max_tokens=1024) for q, a in rows]
            without = [screen(a, q, "", checks=off, max_tokens=1024) for q, a in rows]
            print(f"| {name} | {kind} | {len(rows)} | {sum(r is not None for r in on) / len(rows):.0%} | "
                  f"{sum(r == 'hedge' for r in on) / len(rows):.0%} | {sum(r is not None for r in without) / len(rows):.0%} |")


if __name__ == "__main__":
    main()
