"""The course's one bibliography: citation key -> paper, and the pattern that finds citations in text.

A key is the citation exactly as the prose writes it: ``"Ho et al. 2020"``, ``"Salimans & Ho 2022"``,
``"Vincent 2011"``; a first author with two papers in one year gets ``a``/``b`` (``"Song et al. 2021a"``,
the score SDE, and ``"Song et al. 2021b"``, DDIM), and then the bare ``"Song et al. 2021"`` is ambiguous.
A list of authors written out (``"Brown, Cai & DasGupta 2001"``) is cited as its first author
``et al.``. ``tests/test_citations.py`` checks that every citation in the package's and the kernels'
docstrings and in the notebooks' Markdown resolves to exactly one entry (:func:`resolve`).

To cite a new paper, add one entry here (keep the table sorted by key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reference", "REFERENCES", "CITATION", "find_citations", "resolve", "check_table"]


@dataclass(frozen=True)
class Reference:
    """One paper: ``authors`` as written in the paper (family names), ``year`` of the cited version."""

    authors: str
    year: int
    title: str
    venue: str
    link: str


R = Reference
REFERENCES: dict[str, Reference] = {
    "Albergo & Vanden-Eijnden 2023": R("Albergo, Vanden-Eijnden", 2023, "Building Normalizing Flows with Stochastic Interpolants", "ICLR 2023", "https://arxiv.org/abs/2209.15571"),
    "Amdahl 1967": R("Amdahl", 1967, "Validity of the single processor approach to achieving large scale computing capabilities", "AFIPS Spring Joint Computer Conference 1967", "https://doi.org/10.1145/1465482.1465560"),
    "Anderson 1982": R("Anderson", 1982, "Reverse-time diffusion equation models", "Stochastic Processes and their Applications 12(3)", "https://doi.org/10.1016/0304-4149(82)90051-5"),
    "Arvesen 1969": R("Arvesen", 1969, "Jackknifing U-statistics", "Annals of Mathematical Statistics 40(6)", "https://doi.org/10.1214/aoms/1177697280"),
    "Austin et al. 2021": R("Austin, Johnson, Ho, Tarlow, van den Berg", 2021, "Structured Denoising Diffusion Models in Discrete State-Spaces", "NeurIPS 2021", "https://arxiv.org/abs/2107.03006"),
    "Bińkowski et al. 2018": R("Bińkowski, Sutherland, Arbel, Gretton", 2018, "Demystifying MMD GANs", "ICLR 2018", "https://arxiv.org/abs/1801.01401"),
    "Bishop 2006": R("Bishop", 2006, "Pattern Recognition and Machine Learning", "Springer", "https://www.microsoft.com/en-us/research/publication/pattern-recognition-machine-learning/"),
    "Bonneel et al. 2015": R("Bonneel, Rabin, Peyré, Pfister", 2015, "Sliced and Radon Wasserstein Barycenters of Measures", "Journal of Mathematical Imaging and Vision 51", "https://doi.org/10.1007/s10851-014-0506-3"),
    "Box & Muller 1958": R("Box, Muller", 1958, "A Note on the Generation of Random Normal Deviates", "Annals of Mathematical Statistics 29(2)", "https://doi.org/10.1214/aoms/1177706645"),
    "Brown et al. 2001": R("Brown, Cai, DasGupta", 2001, "Interval Estimation for a Binomial Proportion", "Statistical Science 16(2)", "https://doi.org/10.1214/ss/1009213286"),
    "Carlini et al. 2023": R("Carlini, Hayes, Nasr, Jagielski, Sehwag, Tramèr, Balle, Ippolito, Wallace", 2023, "Extracting Training Data from Diffusion Models", "USENIX Security 2023", "https://arxiv.org/abs/2301.13188"),
    "Chang et al. 2022": R("Chang, Zhang, Jiang, Liu, Freeman", 2022, "MaskGIT: Masked Generative Image Transformer", "CVPR 2022", "https://arxiv.org/abs/2202.04200"),
    "Chen 2023": R("Chen", 2023, "On the Importance of Noise Scheduling for Diffusion Models", "arXiv 2301.10972", "https://arxiv.org/abs/2301.10972"),
    "Chen et al. 2018": R("Chen, Rubanova, Bettencourt, Duvenaud", 2018, "Neural Ordinary Differential Equations", "NeurIPS 2018", "https://arxiv.org/abs/1806.07366"),
    "Chen et al. 2021": R("Chen, Zhang, Zen, Weiss, Norouzi, Chan", 2021, "WaveGrad: Estimating Gradients for Waveform Generation", "ICLR 2021", "https://arxiv.org/abs/2009.00713"),
    "Choi et al. 2021": R("Choi, Kim, Jeong, Gwon, Yoon", 2021, "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models", "ICCV 2021", "https://arxiv.org/abs/2108.02938"),
    "Chung et al. 2023": R("Chung, Kim, McCann, Klasky, Ye", 2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems", "ICLR 2023", "https://arxiv.org/abs/2209.14687"),
    "Cody & Waite 1980": R("Cody, Waite", 1980, "Software Manual for the Elementary Functions", "Prentice-Hall", "https://openlibrary.org/works/OL4109836W"),
    "Davison & Hinkley 1997": R("Davison, Hinkley", 1997, "Bootstrap Methods and their Application", "Cambridge University Press", "https://doi.org/10.1017/CBO9780511802843"),
    "Devlin et al. 2019": R("Devlin, Chang, Lee, Toutanova", 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding", "NAACL 2019", "https://arxiv.org/abs/1810.04805"),
    "Dhariwal & Nichol 2021": R("Dhariwal, Nichol", 2021, "Diffusion Models Beat GANs on Image Synthesis", "NeurIPS 2021", "https://arxiv.org/abs/2105.05233"),
    "Dosovitskiy et al. 2021": R("Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold, Gelly, Uszkoreit, Houlsby", 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", "ICLR 2021", "https://arxiv.org/abs/2010.11929"),
    "Dowson & Landau 1982": R("Dowson, Landau", 1982, "The Fréchet distance between multivariate normal distributions", "Journal of Multivariate Analysis 12(3)", "https://doi.org/10.1016/0047-259X(82)90077-X"),
    "Eckart & Young 1936": R("Eckart, Young", 1936, "The Approximation of One Matrix by Another of Lower Rank", "Psychometrika 1(3)", "https://doi.org/10.1007/BF02288367"),
    "Efron 2011": R("Efron", 2011, "Tweedie's Formula and Selection Bias", "Journal of the American Statistical Association 106(496)", "https://doi.org/10.1198/jasa.2011.tm11181"),
    "Einstein 1905": R("Einstein", 1905, "Über die von der molekularkinetischen Theorie der Wärme geforderte Bewegung von in ruhenden Flüssigkeiten suspendierten Teilchen", "Annalen der Physik 17", "https://doi.org/10.1002/andp.19053220806"),
    "Feller 1949": R("Feller", 1949, "On the Theory of Stochastic Processes, with Particular Reference to Applications", "Proc. First Berkeley Symposium on Mathematical Statistics and Probability", "https://projecteuclid.org/euclid.bsmsp/1166219215"),
    "Goodfellow et al. 2014": R("Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville, Bengio", 2014, "Generative Adversarial Nets", "NeurIPS 2014", "https://arxiv.org/abs/1406.2661"),
    "Grathwohl et al. 2018": R("Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud", 2018, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models", "ICLR 2019", "https://arxiv.org/abs/1810.01367"),
    "Gretton et al. 2012": R("Gretton, Borgwardt, Rasch, Schölkopf, Smola", 2012, "A Kernel Two-Sample Test", "JMLR 13", "https://jmlr.org/papers/v13/gretton12a.html"),
    "Gumbel 1954": R("Gumbel", 1954, "Statistical Theory of Extreme Values and Some Practical Applications", "National Bureau of Standards Applied Mathematics Series 33", "https://ntrl.ntis.gov/NTRL/dashboard/searchResults/titleDetail/PB175818.xhtml"),
    "Hairer et al. 1993": R("Hairer, Nørsett, Wanner", 1993, "Solving Ordinary Differential Equations I: Nonstiff Problems (2nd ed.)", "Springer", "https://doi.org/10.1007/978-3-540-78862-1"),
    "He et al. 2022": R("He, Chen, Xie, Li, Dollár, Girshick", 2022, "Masked Autoencoders Are Scalable Vision Learners", "CVPR 2022", "https://arxiv.org/abs/2111.06377"),
    "Heusel et al. 2017": R("Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter", 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", "NeurIPS 2017", "https://arxiv.org/abs/1706.08500"),
    "Ho & Salimans 2022": R("Ho, Salimans", 2022, "Classifier-Free Diffusion Guidance", "NeurIPS 2021 Workshop on Deep Generative Models (arXiv 2022)", "https://arxiv.org/abs/2207.12598"),
    "Ho et al. 2020": R("Ho, Jain, Abbeel", 2020, "Denoising Diffusion Probabilistic Models", "NeurIPS 2020", "https://arxiv.org/abs/2006.11239"),
    "Hutchinson 1989": R("Hutchinson", 1989, "A Stochastic Estimator of the Trace of the Influence Matrix for Laplacian Smoothing Splines", "Communications in Statistics - Simulation and Computation 18(3)", "https://doi.org/10.1080/03610918908812806"),
    "Hyvärinen 2005": R("Hyvärinen", 2005, "Estimation of Non-Normalized Statistical Models by Score Matching", "JMLR 6", "https://jmlr.org/papers/v6/hyvarinen05a.html"),
    "Jabri et al. 2022": R("Jabri, Fleet, Chen", 2022, "Scalable Adaptive Computation for Iterative Generation", "ICML 2023 (arXiv 2022)", "https://arxiv.org/abs/2212.11972"),
    "Karplus & Strong 1983": R("Karplus, Strong", 1983, "Digital Synthesis of Plucked-String and Drum Timbres", "Computer Music Journal 7(2)", "https://doi.org/10.2307/3680062"),
    "Karras et al. 2022": R("Karras, Aittala, Aila, Laine", 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", "NeurIPS 2022", "https://arxiv.org/abs/2206.00364"),
    "Kingma & Welling 2014": R("Kingma, Welling", 2014, "Auto-Encoding Variational Bayes", "ICLR 2014", "https://arxiv.org/abs/1312.6114"),
    "Kingma et al. 2021": R("Kingma, Salimans, Poole, Ho", 2021, "Variational Diffusion Models", "NeurIPS 2021", "https://arxiv.org/abs/2107.00630"),
    "Kolmogorov 1931": R("Kolmogorov", 1931, "Über die analytischen Methoden in der Wahrscheinlichkeitsrechnung", "Mathematische Annalen 104", "https://doi.org/10.1007/BF01457949"),
    "Kong et al. 2021": R("Kong, Ping, Huang, Zhao, Catanzaro", 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis", "ICLR 2021", "https://arxiv.org/abs/2009.09761"),
    "Kynkäänniemi et al. 2019": R("Kynkäänniemi, Karras, Laine, Lehtinen, Aila", 2019, "Improved Precision and Recall Metric for Assessing Generative Models", "NeurIPS 2019", "https://arxiv.org/abs/1904.06991"),
    "Kynkäänniemi et al. 2024": R("Kynkäänniemi, Aittala, Karras, Laine, Aila, Lehtinen", 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models", "NeurIPS 2024", "https://arxiv.org/abs/2404.07724"),
    "Lin et al. 2024": R("Lin, Liu, Li, Yang", 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", "WACV 2024", "https://arxiv.org/abs/2305.08891"),
    "Lipman et al. 2023": R("Lipman, Chen, Ben-Hamu, Nickel, Le", 2023, "Flow Matching for Generative Modeling", "ICLR 2023", "https://arxiv.org/abs/2210.02747"),
    "Liu et al. 2023": R("Liu, Gong, Liu", 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow", "ICLR 2023", "https://arxiv.org/abs/2209.03003"),
    "Loshchilov & Hutter 2017": R("Loshchilov, Hutter", 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts", "ICLR 2017", "https://arxiv.org/abs/1608.03983"),
    "Lou et al. 2024": R("Lou, Meng, Ermon", 2024, "Discrete Diffusion Modeling by Estimating the Ratios of the Data Distribution", "ICML 2024", "https://arxiv.org/abs/2310.16834"),
    "Lu et al. 2022a": R("Lu, Zhou, Bao, Chen, Li, Zhu", 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps", "NeurIPS 2022", "https://arxiv.org/abs/2206.00927"),
    "Lu et al. 2022b": R("Lu, Zhou, Bao, Chen, Li, Zhu", 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", "arXiv 2211.01095 (Machine Intelligence Research 2025)", "https://arxiv.org/abs/2211.01095"),
    "Lugmayr et al. 2022": R("Lugmayr, Danelljan, Romero, Yu, Timofte, Van Gool", 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", "CVPR 2022", "https://arxiv.org/abs/2201.09865"),
    "Luhman & Luhman 2021": R("Luhman, Luhman", 2021, "Knowledge Distillation in Iterative Generative Models for Improved Sampling Speed", "arXiv 2101.02388", "https://arxiv.org/abs/2101.02388"),
    "Maddison et al. 2014": R("Maddison, Tarlow, Minka", 2014, "A* Sampling", "NeurIPS 2014", "https://arxiv.org/abs/1411.0030"),
    "Meng et al. 2022": R("Meng, He, Song, Song, Wu, Zhu, Ermon", 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations", "ICLR 2022", "https://arxiv.org/abs/2108.01073"),
    "Nalisnick et al. 2019": R("Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan", 2019, "Do Deep Generative Models Know What They Don't Know?", "ICLR 2019", "https://arxiv.org/abs/1810.09136"),
    "Nichol & Dhariwal 2021": R("Nichol, Dhariwal", 2021, "Improved Denoising Diffusion Probabilistic Models", "ICML 2021", "https://arxiv.org/abs/2102.09672"),
    "Ou et al. 2024": R("Ou, Nie, Xue, Zhu, Sun, Li, Li", 2024, "Your Absorbing Discrete Diffusion Secretly Models the Conditional Distributions of Clean Data", "arXiv 2406.03736 (ICLR 2025)", "https://arxiv.org/abs/2406.03736"),
    "Peebles & Xie 2023": R("Peebles, Xie", 2023, "Scalable Diffusion Models with Transformers", "ICCV 2023", "https://arxiv.org/abs/2212.09748"),
    "Perez et al. 2018": R("Perez, Strub, de Vries, Dumoulin, Courville", 2018, "FiLM: Visual Reasoning with a General Conditioning Layer", "AAAI 2018", "https://arxiv.org/abs/1709.07871"),
    "Pooladian et al. 2023": R("Pooladian, Ben-Hamu, Domingo-Enrich, Amos, Lipman, Chen", 2023, "Multisample Flow Matching: Straightening Flows with Minibatch Couplings", "ICML 2023", "https://arxiv.org/abs/2304.14772"),
    "Rabin et al. 2011": R("Rabin, Peyré, Delon, Bernot", 2011, "Wasserstein Barycenter and Its Application to Texture Mixing", "SSVM 2011", "https://doi.org/10.1007/978-3-642-24785-9_37"),
    "Roberts & Tweedie 1996": R("Roberts, Tweedie", 1996, "Exponential Convergence of Langevin Distributions and Their Discrete Approximations", "Bernoulli 2(4)", "https://doi.org/10.2307/3318418"),
    "Rombach et al. 2022": R("Rombach, Blattmann, Lorenz, Esser, Ommer", 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", "CVPR 2022", "https://arxiv.org/abs/2112.10752"),
    "Ronneberger et al. 2015": R("Ronneberger, Fischer, Brox", 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation", "MICCAI 2015", "https://arxiv.org/abs/1505.04597"),
    "Saharia et al. 2022": R("Saharia, Ho, Chan, Salimans, Fleet, Norouzi", 2022, "Image Super-Resolution via Iterative Refinement", "IEEE TPAMI 2022", "https://arxiv.org/abs/2104.07636"),
    "Sahoo et al. 2024": R("Sahoo, Arriola, Schiff, Gokaslan, Marroquin, Chiu, Rush, Kuleshov", 2024, "Simple and Effective Masked Diffusion Language Models", "NeurIPS 2024", "https://arxiv.org/abs/2406.07524"),
    "Salimans & Ho 2022": R("Salimans, Ho", 2022, "Progressive Distillation for Fast Sampling of Diffusion Models", "ICLR 2022", "https://arxiv.org/abs/2202.00512"),
    "Salmon et al. 2011": R("Salmon, Moraes, Dror, Shaw", 2011, "Parallel Random Numbers: As Easy as 1, 2, 3", "SC11", "https://doi.org/10.1145/2063384.2063405"),
    "Shi et al. 2024": R("Shi, Han, Wang, Doucet, Titsias", 2024, "Simplified and Generalized Masked Diffusion for Discrete Data", "NeurIPS 2024", "https://arxiv.org/abs/2406.04329"),
    "Sohl-Dickstein et al. 2015": R("Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli", 2015, "Deep Unsupervised Learning using Nonequilibrium Thermodynamics", "ICML 2015", "https://arxiv.org/abs/1503.03585"),
    "Somepalli et al. 2023": R("Somepalli, Singla, Goldblum, Geiping, Goldstein", 2023, "Diffusion Art or Digital Forgery? Investigating Data Replication in Diffusion Models", "CVPR 2023", "https://arxiv.org/abs/2212.03860"),
    "Song & Ermon 2019": R("Song, Ermon", 2019, "Generative Modeling by Estimating Gradients of the Data Distribution", "NeurIPS 2019", "https://arxiv.org/abs/1907.05600"),
    "Song & Ermon 2020": R("Song, Ermon", 2020, "Improved Techniques for Training Score-Based Generative Models", "NeurIPS 2020", "https://arxiv.org/abs/2006.09011"),
    "Song et al. 2021a": R("Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole", 2021, "Score-Based Generative Modeling through Stochastic Differential Equations", "ICLR 2021", "https://arxiv.org/abs/2011.13456"),
    "Song et al. 2021b": R("Song, Meng, Ermon", 2021, "Denoising Diffusion Implicit Models", "ICLR 2021", "https://arxiv.org/abs/2010.02502"),
    "Song & Dhariwal 2023": R("Song, Dhariwal", 2023, "Improved Techniques for Training Consistency Models", "ICLR 2024 (arXiv 2023)", "https://arxiv.org/abs/2310.14189"),
    "Song et al. 2023": R("Song, Dhariwal, Chen, Sutskever", 2023, "Consistency Models", "ICML 2023", "https://arxiv.org/abs/2303.01469"),
    "Theis et al. 2016": R("Theis, van den Oord, Bethge", 2016, "A Note on the Evaluation of Generative Models", "ICLR 2016", "https://arxiv.org/abs/1511.01844"),
    "Tong et al. 2023": R("Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio", 2023, "Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport", "TMLR 2024 (arXiv 2023)", "https://arxiv.org/abs/2302.00482"),
    "Uhlenbeck & Ornstein 1930": R("Uhlenbeck, Ornstein", 1930, "On the Theory of the Brownian Motion", "Physical Review 36", "https://doi.org/10.1103/PhysRev.36.823"),
    "Vaswani et al. 2017": R("Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin", 2017, "Attention Is All You Need", "NeurIPS 2017", "https://arxiv.org/abs/1706.03762"),
    "Vincent 2011": R("Vincent", 2011, "A Connection Between Score Matching and Denoising Autoencoders", "Neural Computation 23(7)", "https://doi.org/10.1162/NECO_a_00142"),
    "Wang et al. 2019": R("Wang, Takaki, Yamagishi", 2019, "Neural Source-filter-based Waveform Model for Statistical Parametric Speech Synthesis", "ICASSP 2019", "https://arxiv.org/abs/1810.11946"),
    "Williams et al. 2009": R("Williams, Waterman, Patterson", 2009, "Roofline: An Insightful Visual Performance Model for Multicore Architectures", "Communications of the ACM 52(4)", "https://doi.org/10.1145/1498765.1498785"),
    "Wilson 1927": R("Wilson", 1927, "Probable Inference, the Law of Succession, and Statistical Inference", "Journal of the American Statistical Association 22(158)", "https://doi.org/10.1080/01621459.1927.10502953"),
}
del R

_NAME = r"[A-Z][\w'\-]*[a-z][\w'\-]*"          # a capitalised family name: Ho, Sohl-Dickstein, Kynkäänniemi
_YEAR = r"(?:1[89]|20)\d\d[ab]?"
#: One citation: "A et al. YEAR", "A & B YEAR" or a written-out list "A, B & C YEAR" (cited as "A et al. YEAR").
CITATION = re.compile(rf"\b(?P<list>{_NAME}(?:, {_NAME})+,? & {_NAME}) (?P<ly>{_YEAR})\b"
                      rf"|\b(?P<pair>{_NAME} & {_NAME}) (?P<py>{_YEAR})\b"
                      rf"|\b(?P<first>{_NAME}) et al\.? (?P<ey>{_YEAR})\b")


def find_citations(text: str) -> list[str]:
    """The citation keys in ``text`` (whitespace, line breaks and comment markers collapsed), in order."""
    flat = re.sub(r"\s+(?:#\s*)?", " ", text)
    keys = []
    for m in CITATION.finditer(flat):
        if m.group("list"):
            keys.append(f"{m.group('list').split(',')[0]} et al. {m.group('ly')}")
        elif m.group("pair"):
            keys.append(f"{m.group('pair')} {m.group('py')}")
        else:
            keys.append(f"{m.group('first')} et al. {m.group('ey')}")
    return keys


def resolve(key: str) -> Reference:
    """The entry of ``key``; ``KeyError`` naming the problem when it has none or is ambiguous (a bare year
    where the bibliography has ``a``/``b`` papers)."""
    if key in REFERENCES:
        return REFERENCES[key]
    lettered = sorted(k for k in (key + "a", key + "b") if k in REFERENCES)
    if lettered:
        raise KeyError(f"{key!r} is ambiguous: cite one of {lettered}")
    raise KeyError(f"{key!r} is not in minidiff.bibliography.REFERENCES; add the paper there")


def check_table() -> list[str]:
    """Problems with the table itself: a key whose year or first author disagrees with its entry, or
    one first author and year used both bare and lettered, or lettered without both letters' order."""
    problems = []
    for key, ref in REFERENCES.items():
        m = re.fullmatch(rf"(?P<names>.+?)(?: et al\.)? (?P<year>\d{{4}})(?P<letter>[ab]?)", key)
        if m is None or int(m.group("year")) != ref.year:
            problems.append(f"{key!r}: the key's year is not the entry's year {ref.year}")
            continue
        first = m.group("names").split(" & ")[0]
        if ref.authors.split(",")[0].strip() != first:
            problems.append(f"{key!r}: first author {ref.authors.split(',')[0]!r} is not {first!r}")
        stem = key[:-1] if m.group("letter") else key
        if m.group("letter") and stem in REFERENCES:
            problems.append(f"{stem!r} exists bare and lettered ({key!r})")
        if m.group("letter") == "b" and stem + "a" not in REFERENCES:
            problems.append(f"{key!r} has no 'a' sibling")
    return problems
