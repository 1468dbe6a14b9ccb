"""`python tests/kill_in_save.py STEP STAGE --recipe R [--set ...]`: `python -m kit STAGE ...`, killed by a real SIGKILL
inside the Trainer's save of checkpoint STEP: that checkpoint's weights are written, its optimizer file is half
written when the signal comes, and its RNG and trainer state never are (transformers' `_save_checkpoint` writes the
trainer state last). What a machine that dies, or a session that is stopped, in the middle of a save leaves."""

import io
import os
import runpy
import signal
import sys


def main():
    step, args = int(sys.argv[1]), sys.argv[2:]
    import torch
    from transformers import Trainer

    save_optimizer = Trainer._save_optimizer_and_scheduler

    def dying(self, output_dir):
        if self.state.global_step == step:
            real_save = torch.save

            def half_then_killed(obj, f, *a, **kw):
                buffer = io.BytesIO()
                real_save(obj, buffer, *a, **kw)
                data = buffer.getvalue()
                with open(f, "wb") as out:
                    out.write(data[: len(data) // 2])
                    out.flush()
                    os.fsync(out.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = half_then_killed
        return save_optimizer(self, output_dir)

    Trainer._save_optimizer_and_scheduler = dying
    sys.argv = ["kit", *args]
    runpy.run_module("kit", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
