"""Worker of test_ddp_collection.py (4 gloo processes through torchrun); not collected by pytest.

Each rank sees 1/4 of a 24-image dataset through a DistributedSampler; the deferred switch must still collect
``num_samples`` latents over all ranks together (before the fix each rank sized its share by the whole dataset and
all ranks together collected about 2 * num_samples / world_size).
"""

import faulthandler
import sys

import torch
import torch.distributed as dist
from ignite.engine import Engine
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from medvq.handlers import DeferredQuantizationHandler
from medvq.networks import vqgan_tiny

NUM_SAMPLES = 1003  # not a multiple of 4: the remainder goes to the first ranks


class Images(Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(3, 32, 32, generator=g) * 2 - 1}


def main(out_dir: str) -> None:
    faulthandler.dump_traceback_later(90, exit=True)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    net = vqgan_tiny(num_embeddings=64, embedding_dim=4, quantize=False)
    dataset = Images()
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, shuffle=True, seed=0),
                        drop_last=True)
    engine = Engine(lambda e, b: None)
    engine.state.iteration, engine.state.epoch = 5, 1
    handler = DeferredQuantizationHandler(net, start=5, num_samples=NUM_SAMPLES, data_loader=loader, seed=0)
    local = handler.collect_latents(engine)
    report = handler.switch(engine)
    torch.save({"local": local.shape[0], "total": report.num_samples, "codebook": net.quantizer.codebook.detach()},
               f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
