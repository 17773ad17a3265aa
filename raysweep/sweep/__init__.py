"""The Ray side: resources, trials as in-process loops or DDP jobs, searchers, schedulers, Tuner."""
