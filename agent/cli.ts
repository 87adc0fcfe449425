/**
 * Entry of the `pagedisk` binary: agent commands and management commands.
 */
import { Command } from "commander";

const program = new Command();
program.name("pagedisk").description("Azure page blobs as Linux block devices").version("0.1.0");

await program.parseAsync(process.argv);
