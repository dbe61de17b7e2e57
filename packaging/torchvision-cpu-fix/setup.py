"""setuptools has no declarative way to put a ``.pth`` file at the root of a wheel; this copies it there."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "adatp_torchvision_cpu_fix.pth"


class BuildWithPth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(self.build_lib) / PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildWithPth})
