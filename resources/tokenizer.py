"""The pretraining tokenizer: it tokenizes clean text into token files and counts the tokens a
shard keeps (chunk budgets are the refiner's tokenizer's: ``RefinerResource``)."""


import dagster as dg
from pydantic import PrivateAttr

from prox_dagster import environment
from prox_dagster.token_files import FORMATS, PROX_CHUNK_SIZE, TokenFileError, token_dtype
from prox_dagster.tokenization import SAMPLE_TOKENIZER, load_tokenizer, tokenizer_identity


class TokenizerResource(dg.ConfigurableResource):
    """Any Hugging Face tokenizer (local folder or hub id); ``sample`` is the offline default.

    ``output_format`` picks the token files of ``tokenized_shard`` (empty: ``PROX_TOKEN_FORMAT``,
    else ``parquet``): ``parquet``, ``megatron`` (``.bin``/``.idx``) or ``litgpt`` (a token
    stream per shard, which ``pretraining_set`` packs across shards into ``LITPKDS`` chunks of
    ``litgpt_chunk_size`` tokens; the set's last chunk is padded with ``sep_token``, BOS when
    negative; with ``litdata``, the same chunks also as a litdata set, which ``litgpt pretrain
    --data LitData`` reads). ``token_dtype`` ``auto`` takes the smallest that holds the
    vocabulary.
    """

    name_or_path: str = SAMPLE_TOKENIZER
    output_format: str = ""
    token_dtype: str = "auto"
    litgpt_chunk_size: int = PROX_CHUNK_SIZE
    sep_token: int = -1
    litdata: bool = True
    batch_size: int = 1024

    _identity: dict = PrivateAttr(default_factory=dict)

    def get(self):
        return load_tokenizer(self.name_or_path)

    def identity(self, resolve: bool = True) -> str:
        """What identifies the tokenizer, read without loading it (``resolve=False``: asking no
        hub); once per resource."""
        if resolve not in self._identity:
            self._identity[resolve] = tokenizer_identity(self.name_or_path, resolve=resolve)
        return self._identity[resolve]

    def token_files(self) -> dict:
        """The token-file settings as configured (a bad format is an error here; whether the
        vocabulary fits the dtype, when the tokenizer is loaded: :meth:`file_settings`)."""
        fmt = self.output_format or environment.value("PROX_TOKEN_FORMAT")
        if fmt not in FORMATS:
            raise TokenFileError(f"token output format {fmt!r} (TokenizerResource.output_format "
                                 f"or PROX_TOKEN_FORMAT) is not one of {FORMATS}")
        return {"format": fmt, "dtype": self.token_dtype}

    def file_settings(self) -> dict:
        """The token-file settings, validated: a bad format or a dtype the vocabulary does not
        fit is an error before any shard is read."""
        fmt = self.token_files()["format"]
        dtype = token_dtype(len(self.get()), self.token_dtype)
        return {"fmt": fmt, "dtype": dtype.name}

    def pack_settings(self) -> dict:
        """How ``pretraining_set`` cuts litgpt chunks: size and padding token."""
        sep = self.get().bos_token_id if self.sep_token < 0 else self.sep_token
        if sep is None:
            raise TokenFileError(f"tokenizer {self.name_or_path!r} has no BOS token to pad the "
                                 "last litgpt chunk with; set sep_token")
        if self.litgpt_chunk_size < 1:
            raise TokenFileError(f"litgpt_chunk_size must be positive, not "
                                 f"{self.litgpt_chunk_size}")
        return {"chunk_size": self.litgpt_chunk_size, "sep_token": sep,
                "litdata": self.litdata}
