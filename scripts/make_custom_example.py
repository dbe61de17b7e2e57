"""Write the small example of a custom benchmark kept in ``examples/custom/`` (generated videos + questions).

    python scripts/make_custom_example.py            # rewrites examples/custom/

Four short videos with scene changes (one in a sub-folder, one with spaces in its name), and questions of every kind:
multiple choice with 3 to 5 options, free form with a reference answer, and one unscored question.
"""

from __future__ import annotations

import json
from pathlib import Path

from adatp_bench.eval.synthetic import Scene, VideoSpec, render_scenes, write_mp4

OUT = Path(__file__).resolve().parents[1] / "examples" / "custom"
SPEC = VideoSpec(width=112, height=112, num_frames=32, fps=8)
VIDEOS = {
    "red then blue.mp4": [Scene(0, 16, "red", "white"), Scene(16, 32, "blue", "yellow")],
    "green.mp4": [Scene(0, 32, "green", "black")],
    "clips/cyan then magenta.mp4": [Scene(0, 10, "cyan", "white"), Scene(10, 32, "magenta", "black")],
    "clips/three scenes.mp4": [Scene(0, 10, "yellow", "blue"), Scene(10, 20, "black", "white"),
                               Scene(20, 32, "orange", "green")],
}  # fmt: skip
QUESTIONS = [
    {"id": "q1", "video": "red then blue.mp4", "question": "Which background colour comes first?",
     "options": ["blue", "red", "green"], "answer": "B", "category": "order", "duration": "4"},
    {"id": "q2", "video": "red then blue.mp4", "question": "How many scenes does the video have?",
     "options": ["one", "two", "three", "four"], "answer": "B", "category": "count", "duration": "4"},
    {"id": "q3", "video": "green.mp4", "question": "What colour is the background?",
     "options": ["red", "blue", "green", "yellow", "black"], "answer": "C", "category": "colour", "duration": "4"},
    {"id": "q4", "video": "clips/cyan then magenta.mp4", "question": "Which background colour comes last?",
     "options": ["magenta", "cyan"], "answer": "A", "category": "order", "duration": "4"},
    {"id": "q5", "video": "clips/three scenes.mp4", "question": "What colour is the square in the last scene?",
     "answer": "green", "category": "colour", "duration": "4"},
    {"id": "q6", "video": "clips/three scenes.mp4", "question": "Describe the video in a few words.",
     "category": "caption", "duration": "4"},
]  # fmt: skip


def main() -> None:
    for name, scenes in VIDEOS.items():
        path = OUT / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(render_scenes(scenes, SPEC), path, SPEC.fps)
    (OUT / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    print(f"wrote {len(VIDEOS)} videos and {len(QUESTIONS)} questions under {OUT}")


if __name__ == "__main__":
    main()
