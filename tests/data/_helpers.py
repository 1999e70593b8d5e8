"""Small story files shared by the data tests."""

from pathlib import Path

SAMPLE_STORIES = [
    "Once upon a time, there was a little cat named Tom. Tom liked to play in the sun.",
    "One day, Sara went to the park with her mom. She saw a big red ball and ran to get it.",
    'Ben had a toy car. He raced it across the floor and laughed. "Vroom!" said Ben.',
    "The bird sang a happy song. The sun was warm and the flowers were bright.",
    "Lily and Max built a tall tower of blocks. It fell down, and they built it again.",
    "A little fish swam in the blue sea. It met a friendly turtle who showed it a cave.",
]


def write_stories(path: Path, stories: list[str], *, tail: str = "") -> Path:
    """Write stories in the TinyStories layout (each followed by a line ``<|endoftext|>``), plus ``tail``."""
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories) + tail, encoding="utf-8")
    return path
